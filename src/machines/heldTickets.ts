import type { KekahydeError } from "../errors.ts";
import { createTicket, type Ticket } from "./ticket.ts";

/**
 * The reply channels of requests, outside any context (a context holds data that can be serialised). A route
 * still sends its ticket in the event; the action that keeps the request hands the ticket to this registry and
 * keeps its key in the context; the action that answers looks the ticket up by key, settles it and lets it go.
 * A generation's `onText` is kept the same way, under its ticket's key.
 *
 * Keys are unique in the process (`kind:n`), so one registry serves every actor system, and pure transitions
 * (`transition()`, which runs each step in a system of its own) find the tickets that an earlier step kept.
 */
const tickets = new Map<string, Ticket<never>>();
const listeners = new Map<string, (chunk: string) => void>();
let count = 0;

/** Keeps a ticket and returns its key, which the context holds instead. */
export function holdTicket<T>(kind: string, ticket: Ticket<T>): string {
  const key = `${kind}:${++count}`;
  tickets.set(key, ticket as unknown as Ticket<never>);
  return key;
}

/** The ticket kept under `key`, left kept; undefined once it has been answered. */
export const ticketOf = <T>(key: string): Ticket<T> | undefined => tickets.get(key);

/**
 * Lets go of the ticket kept under `key` (and its text listener) and returns them, to forward them in an event
 * (the receiver keeps them under a key of its own). A ticket answered already is a fresh one nobody awaits.
 */
export function takeTicket<T>(key: string): { ticket: Ticket<T>; onText?: (chunk: string) => void } {
  const ticket: Ticket<T> = tickets.get(key) ?? createTicket<T>();
  const onText = listeners.get(key);
  tickets.delete(key);
  listeners.delete(key);
  return { ticket, ...(onText && { onText }) };
}

/** Answers the ticket kept under `key` (if any: a key may name a ticket answered already) and lets it go. */
export function resolveTicket<T>(key: string | null | undefined, value: T): void {
  if (key == null) return;
  const ticket = tickets.get(key) as Ticket<T> | undefined;
  tickets.delete(key);
  listeners.delete(key);
  ticket?.resolve(value);
}

export function rejectTicket(key: string | null | undefined, error: KekahydeError): void {
  if (key == null) return;
  const ticket = tickets.get(key);
  tickets.delete(key);
  listeners.delete(key);
  ticket?.reject(error);
}

/** Keeps a generation's text listener under its ticket's key, until the ticket is answered. */
export function holdListener(key: string, onText: ((chunk: string) => void) | undefined): void {
  if (onText) listeners.set(key, onText);
}
/** The text listener kept with the ticket under `key`: a running generation's. */
export const listenerOf = (key: string): ((chunk: string) => void) | undefined => listeners.get(key);
