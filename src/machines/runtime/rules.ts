import { takesSlot } from "../../domain/jobs.ts";
import type { KekahydeError } from "../../errors.ts";
import type { GenerationStats, Job, LastError, RuntimeContext, RuntimeEvent } from "./types.ts";

/** The numbers and pure reads of the runtime's context that its guards and actions share. */

/**
 * Times in a row a model is loaded again after its engine was lost under a request (no job ended well in
 * between). A request that kills its engine (a grammar llama.cpp cannot hold, a prompt past the first-token
 * limit) must not take the model from everyone else; a file that crashes on every request stops being retried.
 */
export const RELOADS_AFTER_LOSS = 2;


/** An error as context keeps it: `at` is a time of the actor system's clock (../clock.ts). */
export const errorRecord = (error: KekahydeError, at: number): LastError => ({ code: error.code, message: error.message, at: new Date(at).toISOString() });

export const jobOf = (context: RuntimeContext, id: string): Job | undefined => context.running.find((j) => j.id === id);
/** The job an event names (CANCEL, an engine report), if any. */
export const jobIdOf = (event: RuntimeEvent): string | null => ("job" in event ? event.job : null);
/** The request a STOP {"id"} names, if any. */
export const requestOf = (event: RuntimeEvent): string | null => (event.type === "STOP" ? (event.request ?? null) : null);

/** Slots in use: every running job but token lookups, which need no context sequence. */
export const slotsTaken = (context: RuntimeContext): number => context.running.filter((j) => takesSlot(j.work.kind)).length;

export function freshStats(startedAt: number): GenerationStats {
  return { startedAt, endedAt: null, promptTokens: null, cachedTokens: null, completionTokens: 0, firstTokenMs: null, finishReason: null, draftTokens: null, acceptedDraftTokens: null };
}

/** How long to wait before retrying a refused request: the last generation's length times the queue ahead. */
export function retryAfterSeconds(context: RuntimeContext): number {
  const g = context.lastGeneration;
  const lastSeconds = g?.endedAt ? (g.endedAt - g.startedAt) / 1000 : 1;
  return Math.max(1, Math.ceil((lastSeconds * (context.queue.length + 1)) / context.slots));
}
