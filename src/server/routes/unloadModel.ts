import type Router from "@koa/router";
import type { UnloadResult } from "../../domain/answers.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { optionalBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseUnload } from "../validation.ts";

/** Unloads one model (`"model"`), or every model. */
export function unloadModelRoute(router: Router, { supervisor }: RouteDeps): void {
  router.post("/unload_model", async (ctx) => {
    const { model } = parseUnload(optionalBody(ctx));
    const { unloaded } = await sendRequest(supervisor, { type: "UNLOAD", model, ticket: createTicket<UnloadResult>() });
    ctx.body = { success: true, unloaded, message: unloaded ? "Model unloaded" : "No model was loaded" };
  });
}
