import type Router from "@koa/router";
import type { LoadResult } from "../../machines/runtimeMachine.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseLoadModel } from "../validation.ts";

export function loadModelRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const { path, settings } = parseLoadModel(requireBody(ctx));
    const { model } = await sendRequest(runtime, { type: "LOAD", path, settings, ticket: createTicket<LoadResult>() });
    ctx.body = { success: true, message: "Model loaded", model };
  });
}
