import type Router from "@koa/router";
import type { StopResult } from "../../domain/answers.ts";
import { sendRequest } from "../../machines/sendRequest.ts";
import { createTicket } from "../../machines/ticket.ts";
import { optionalBody } from "../middleware/jsonBody.ts";
import type { RouteDeps } from "../runtime.ts";
import { parseStop } from "../validation.ts";

/**
 * Stops one model's generations (`"model"`), or every model's, and answers once the generation has really
 * ended, so the next request finds the engine free; or stops only the request `{"id"}` names (its
 * X-Request-Id), wherever it runs or waits, and answers at once.
 */
export function stopRoute(router: Router, { supervisor }: RouteDeps): void {
  router.post("/stop", async (ctx) => {
    const stop = parseStop(optionalBody(ctx));
    ctx.body = await sendRequest(supervisor, { type: "STOP", ...stop, ticket: createTicket<StopResult>() });
  });
}
