import type { GenerateResult } from "../../src/domain/generation.ts";
import type { EmbedResult, TokenizeResult } from "../../src/domain/jobs.ts";
import type { LoadResult, StopResult, UnloadResult } from "../../src/machines/runtimeMachine.ts";
import { createTicket, type Outcome, type Ticket } from "../../src/machines/ticket.ts";
import { Reply } from "./runtimeOracle.ts";

/** How a real request was answered, in the reference models' words ("ok:stop", "err:QUEUE_FULL", ...). */
export function answerOf(o: Outcome<unknown>): string {
  if (!o.ok) return `err:${o.error.code}`;
  const v = o.value as Partial<GenerateResult & EmbedResult & TokenizeResult & LoadResult & StopResult & UnloadResult>;
  if ("finishReason" in v) return `ok:${v.finishReason}`;
  if ("vectors" in v) return "ok:embedded";
  if ("tokens" in v) return "ok:tokens";
  if ("stopped" in v) return `ok:stopped=${v.stopped},dropped=${v.dropped}`;
  if ("unloaded" in v) return `ok:unloaded=${v.unloaded}`;
  return "ok:loaded";
}

/**
 * Requests made side by side: each a ticket for the machine and a reply in the reference model. `live` and
 * `expected` list their answers in the order the requests were made, for comparing after every step.
 */
export function pairedRequests() {
  const live: string[] = [];
  const replies: Reply[] = [];
  return {
    request<T>(): { ticket: Ticket<T>; reply: Reply } {
      const i = live.length;
      live.push("pending");
      const reply = new Reply();
      replies.push(reply);
      return { ticket: createTicket<T>((o) => (live[i] = answerOf(o))), reply };
    },
    live: () => [...live],
    expected: () => replies.map((r) => r.answer),
  };
}
