import type Router from "@koa/router";
import type { UnloadResult } from "../../machines/runtimeMachine.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import type { RouteDeps } from "../runtime.ts";

export function unloadModelRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/unload_model", async (ctx) => {
    const { unloaded } = await sendRequest(runtime, { type: "UNLOAD", ticket: createTicket<UnloadResult>() });
    ctx.body = { success: true, unloaded, message: unloaded ? "Model unloaded" : "No model was loaded" };
  });
}
