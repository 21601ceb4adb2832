import type Router from "@koa/router";
import { KekahydeError } from "../../errors.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import type { LoadResult } from "../../machines/runtimeMachine.ts";
import { readJsonObject } from "../body.ts";
import type { RouteDeps } from "../runtime.ts";

export function loadModelRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const body = await readJsonObject(ctx);
    if (typeof body.path !== "string" || body.path.trim() === "") {
      throw new KekahydeError("BAD_REQUEST", 'Body needs "path": the path of a .gguf model file, e.g. {"path": "/abs/model.gguf"}.');
    }
    const ticket = createTicket<LoadResult>();
    const { model } = await sendRequest(runtime, { type: "LOAD", path: body.path, ticket });
    ctx.body = { success: true, message: "Model loaded", model };
  });
}
