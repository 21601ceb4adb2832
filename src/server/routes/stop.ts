import type Router from "@koa/router";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import type { StopResult } from "../../machines/runtimeMachine.ts";
import type { RouteDeps } from "../runtime.ts";

/** Answers once the generation has really ended, so the next request finds the engine free. */
export function stopRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/stop", async (ctx) => {
    ctx.req.resume(); // the body, if any, carries nothing we need
    const ticket = createTicket<StopResult>();
    ctx.body = await sendRequest(runtime, { type: "STOP", ticket });
  });
}
