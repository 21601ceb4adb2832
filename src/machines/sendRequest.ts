import type { Actor } from "xstate";
import { KekahydeError } from "../errors.ts";
import { SHUTTING_DOWN } from "./refusals.ts";
import type { SupervisorMachine, SupervisorRequestEvent } from "./supervisorMachine.ts";

type TicketValue<E> = E extends { ticket: { promise: Promise<infer T> } } ? T : never;

/**
 * Sends a request event and returns its answer. A machine that has stopped takes no events, so a request
 * that arrives during shutdown is answered here instead of waiting forever.
 */
export function sendRequest<E extends SupervisorRequestEvent>(supervisor: Actor<SupervisorMachine>, event: E): Promise<TicketValue<E>> {
  if (supervisor.getSnapshot().status !== "active") {
    event.ticket.reject(new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message));
  } else {
    supervisor.send(event);
  }
  return event.ticket.promise as Promise<TicketValue<E>>;
}
