import type Router from "@koa/router";
import type { StopResult } from "../../machines/runtimeMachine.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { optionalBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseStop } from "../validation.ts";

/** Answers once the generation has really ended, so the next request finds the engine free. */
export function stopRoute(router: Router, { runtime }: RouteDeps): void {
  router.post("/stop", async (ctx) => {
    const { all } = parseStop(optionalBody(ctx));
    ctx.body = await sendRequest(runtime, { type: "STOP", all, ticket: createTicket<StopResult>() });
  });
}
