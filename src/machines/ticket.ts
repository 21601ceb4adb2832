import type { KekahydeError } from "../errors.ts";

/**
 * The reply channel of a request. A route creates a ticket, puts it in the event it sends, and awaits it;
 * the machine settles it from a named action in whatever state the event meets. That keeps every answer a
 * consequence of an explicit transition, and no route ever looks at the engine.
 */
export interface Ticket<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: KekahydeError): void;
  readonly settled: boolean;
}

/** How a ticket was settled, as an event can carry it. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: KekahydeError };

/**
 * A ticket that also tells `onSettle`, synchronously, how it was settled: the supervisor gives one to each
 * model it fans a request out to, and gathers the answers as events.
 */
export function createTicket<T>(onSettle?: (outcome: Outcome<T>) => void): Ticket<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: KekahydeError) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A ticket nobody awaits (a client gone away) must not become an unhandled rejection.
  promise.catch(() => {});
  const ticket = {
    promise,
    settled: false,
    resolve(value: T) {
      if (ticket.settled) return;
      ticket.settled = true;
      resolve(value);
      onSettle?.({ ok: true, value });
    },
    reject(error: KekahydeError) {
      if (ticket.settled) return;
      ticket.settled = true;
      reject(error);
      onSettle?.({ ok: false, error });
    },
  };
  return ticket;
}
