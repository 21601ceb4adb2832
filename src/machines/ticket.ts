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

export function createTicket<T>(): Ticket<T> {
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
    },
    reject(error: KekahydeError) {
      if (ticket.settled) return;
      ticket.settled = true;
      reject(error);
    },
  };
  return ticket;
}

/**
 * Answers `ticket` once every part has settled: with `combine` of the values, or with the first error if
 * any part failed. For requests that a supervisor fans out to several models (stop all, unload all).
 */
export function gather<P, T>(parts: Array<Ticket<P>>, ticket: Ticket<T>, combine: (values: P[]) => T): void {
  void Promise.allSettled(parts.map((p) => p.promise)).then((results) => {
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) ticket.reject(failed.reason as KekahydeError);
    else ticket.resolve(combine(results.map((r) => (r as PromiseFulfilledResult<P>).value)));
  });
}
