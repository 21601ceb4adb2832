import type { AnyActorRef } from "xstate";
import type { FinishReason } from "../../domain/generation.ts";
import type { JobResult, Work } from "../../domain/jobs.ts";
import type { LoadResult, StopResult, UnloadResult } from "../../domain/answers.ts";
import type { ModelInfo, ModelPlan } from "../../domain/models.ts";
import type { EngineEvent } from "../../engine/engineActors.ts";
import type { ErrorCode } from "../../errors.ts";
import type { Ticket } from "../ticket.ts";

/** The runtime machine's events, context and input, and what it answers (the chart: ../runtimeMachine.ts). */

export type { LoadResult, StopResult, UnloadResult } from "../../domain/answers.ts";

/** One generation request, waiting or running. `id` names it in CANCEL, in the engine's reports and as its actor. */
export interface Job {
  id: string;
  /** The client's id for its request (X-Request-Id), which POST /stop {"id"} names; the job id if it gave none. */
  requestId: string;
  /** The key of its ticket in the registry of ../heldTickets.ts (its `onText`, if any, is kept there under `id`). */
  ticket: string;
  /** What it asks of the model: a generation, embeddings, ranking, tokens. */
  work: Work;
  enqueuedAt: number;
  stats: GenerationStats | null;
}

export type RuntimeEvent =
  | { type: "LOAD"; plan: ModelPlan; ticket: Ticket<LoadResult> }
  | { type: "RUN"; id: string; requestId?: string; work: Work; onText?: (chunk: string) => void; ticket: Ticket<JobResult> }
  /** Stops the running generations (`all`: and drops the waiting ones), or only the jobs of request `request`. */
  | { type: "STOP"; all: boolean; request?: string; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; ticket: Ticket<UnloadResult> }
  /** The client of a job went away: stop it if it runs, drop it if it waits. */
  | { type: "CANCEL"; job: string }
  | { type: "SHUTDOWN" }
  | EngineEvent;

export interface LastError {
  code: ErrorCode;
  message: string;
  at: string;
}

/** Figures of the running generation, or of the last one once it has ended. */
export interface GenerationStats {
  startedAt: number;
  endedAt: number | null;
  promptTokens: number | null;
  /** Of the prompt's tokens, those found in the sequence's key-value cache (not evaluated again). */
  cachedTokens: number | null;
  completionTokens: number;
  firstTokenMs: number | null;
  finishReason: FinishReason | null;
  /** Speculative decoding: tokens drafted and checked, and those that held; null when it did not speculate. */
  draftTokens: number | null;
  acceptedDraftTokens: number | null;
}

/** What a runtime tells its supervisor on entering each state that matters to it. */
export type RuntimePhase = "empty" | "loading" | "idle" | "busy" | "unloading" | "stopping" | "stopped";
export interface ModelPhaseEvent {
  type: "MODEL.PHASE";
  name: string;
  phase: RuntimePhase;
  /** The runtime actor that reports. */
  ref: AnyActorRef;
  /** Why the model failed, when it did (set on the `empty` that a failed load or a lost engine leads to). */
  error: LastError | null;
}

export interface RuntimeContext {
  name: string;
  supervisor: AnyActorRef | null;
  maxQueue: number;
  maxGenerationMs: number | null;
  /** Jobs that may generate at once. */
  slots: number;
  /** The loaded model's facts; its handle is in the registry of ./models.ts, under this runtime's session id. */
  model: ModelInfo | null;
  /** The plan the model was loaded with, to load it again after its engine is lost mid-request. */
  plan: ModelPlan | null;
  /**
   * The load under way, or waiting for the previous model to be freed (`replacing`). No ticket: the runtime
   * loads the model again by itself after its engine was lost.
   */
  load: { plan: ModelPlan; ticket: string | null; progress: number } | null;
  /** Reloads after a lost engine since a job last ended well: bounded, so a model that always crashes stays down. */
  reloads: number;
  running: Job[];
  queue: Job[];
  /** Figures of the last job that ended. */
  lastGeneration: GenerationStats | null;
  /** STOPs answered once the generations have ended: their tickets' keys (../heldTickets.ts). */
  stopTickets: Array<{ ticket: string; dropped: number }>;
  /** UNLOADs answered once the model is freed: their tickets' keys. */
  unloadTickets: string[];
  /** Why the model last failed (its load, or its engine); cleared by a successful load. */
  lastError: LastError | null;
}

/** The engine is not input: it is provided (createRuntimeLogic, ../logic.ts), so the context stays data. */
export interface RuntimeInput {
  /** The model's name under the supervisor (default "default"). */
  name?: string;
  /** Receives a MODEL.PHASE event on entry to each reported state. */
  supervisor?: AnyActorRef;
  /** Requests that may wait while the slots are full (default 16; 0: none wait). */
  maxQueue?: number;
  /** Longest any generation may run; null or absent: no limit. */
  maxGenerationMs?: number | null;
  /** Jobs that may generate at once (default 1). */
  slots?: number;
}
