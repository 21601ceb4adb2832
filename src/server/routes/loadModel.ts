import type Router from "@koa/router";
import type { LoadResult } from "../../machines/runtimeMachine.ts";
import { defaultModelName } from "../../domain/models.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { requireBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseLoadModel } from "../validation.ts";

export function loadModelRoute(router: Router, { supervisor }: RouteDeps): void {
  router.post("/load_model", async (ctx) => {
    const request = parseLoadModel(requireBody(ctx));
    const { model } = await sendRequest(supervisor, { type: "LOAD", ...request, ticket: createTicket<LoadResult>() });
    const name = request.name ?? defaultModelName(request.path);
    ctx.body = { success: true, message: "Model loaded", name, model };
  });
}
