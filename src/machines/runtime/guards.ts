import { takesSlot } from "../../domain/jobs.ts";
import { ENGINE_FAILURES } from "../../errors.ts";
import { jobIdOf, RELOADS_AFTER_LOSS, requestOf, slotsTaken } from "./rules.ts";
import type { RuntimeContext, RuntimeEvent } from "./types.ts";

/**
 * The runtime's guards: each a pure question about its context and the event. What each one means, in words,
 * is in docs/state-chart.md (src/machines/stateChartDoc.ts).
 */

type Guard = (args: { context: RuntimeContext; event: RuntimeEvent }) => boolean;

export const runtimeGuards = {
  hasFreeSlot: ({ context }) => slotsTaken(context) < context.slots,
  asksForTokens: ({ event }) => event.type === "RUN" && !takesSlot(event.work.kind),
  queueHasRoom: ({ context }) => context.queue.length < context.maxQueue,
  nothingRunning: ({ context }) => context.running.length === 0,
  isRunningJob: ({ context, event }) => context.running.some((j) => j.id === jobIdOf(event)),
  isQueuedJob: ({ context, event }) => context.queue.some((j) => j.id === jobIdOf(event)),
  isEngineFailure: ({ event }) => event.type === "JOB.FAILED" && ENGINE_FAILURES.has(event.error.code),
  stopsAll: ({ event }) => event.type === "STOP" && event.all,
  namesRequest: ({ event }) => requestOf(event) !== null,
  stopsRunningRequest: ({ context, event }) => context.running.some((j) => j.requestId === requestOf(event)),
  stopsWaitingRequest: ({ context, event }) => context.queue.some((j) => j.requestId === requestOf(event)),
  hasWaitingJobs: ({ context }) => context.queue.length > 0,
  /** The engine was lost under running requests, and the model has not been reloaded too often already. */
  canReloadAfterLoss: ({ context }) => context.running.length > 0 && context.reloads < RELOADS_AFTER_LOSS,
  /**
   * While the model loads, the requests that wait for it are not behind busy slots: up to `slots` of them
   * start when it is loaded, so they wait whatever --max-queue is (0 included), and --max-queue more beside.
   */
  roomWhileLoading: ({ context }) => context.queue.length < context.slots + context.maxQueue,
} satisfies Record<string, Guard>;
