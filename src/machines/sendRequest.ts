import type { Actor } from "xstate";
import { KekahydeError } from "../errors.ts";
import type { RequestEvent, RuntimeMachine } from "./runtimeMachine.ts";

type TicketValue<E> = E extends { ticket: { promise: Promise<infer T> } } ? T : never;

/**
 * Sends a request event and returns its answer. A machine that has stopped takes no events, so a request
 * that arrives during shutdown is answered here instead of waiting forever.
 */
export function sendRequest<E extends RequestEvent>(runtime: Actor<RuntimeMachine>, event: E): Promise<TicketValue<E>> {
  if (runtime.getSnapshot().status !== "active") {
    event.ticket.reject(new KekahydeError("SHUTTING_DOWN", "The daemon is shutting down."));
  } else {
    runtime.send(event);
  }
  return event.ticket.promise as Promise<TicketValue<E>>;
}
