import type { ActorRefFrom } from "xstate";
import type { JobResult, Work } from "../../domain/jobs.ts";
import type { LoadSettings, MemoryBudget, ModelPlan } from "../../domain/models.ts";
import type { KekahydeError } from "../../errors.ts";
import type { MonitorEvent } from "../../monitor/monitorActor.ts";
import type { ResourceSample } from "../../monitor/resourceSampler.ts";
import type { Placement } from "./placement.ts";
import type { RuntimeMachine } from "../runtimeMachine.ts";
import type { LastError, LoadResult, ModelPhaseEvent, RuntimePhase, StopResult, UnloadResult } from "../runtime/types.ts";
import type { Outcome, Ticket } from "../ticket.ts";

/** The supervisor's events, context and input, and what it keeps of each model (the chart: ../supervisorMachine.ts). */

export type RuntimeRef = ActorRefFrom<RuntimeMachine>;

/** A loaded model, as the supervisor keeps it. */
export interface ModelEntry {
  name: string;
  ref: RuntimeRef;
  /** The real path of the file. */
  path: string;
  /** The runtime's last reported phase; "new": spawned, its load not yet under way. */
  phase: RuntimePhase | "new";
  bytes: number;
  /** When its load was accepted. */
  loadedAt: number;
  /** Order of loads (a counter: several fall in one millisecond): the most recent is the default model. */
  loadOrder: number;
  lastUsed: number;
  /** Order of last use (a counter: many uses fall in one millisecond); eviction takes the lowest first. */
  useOrder: number;
  /** How long it stays loaded once idle: 0 unload at once, -1 forever. */
  keepAliveMs: number;
  expiresAt: number | null;
  /** With `path`, what identifies the file's contents (a changed file is a new file). */
  fileSize: number;
  mtimeMs: number;
}

/** A file whose engine crashed (or was stopped for a time limit): not loaded again in a loop. */
export interface CrashRecord {
  fileSize: number;
  mtimeMs: number;
  /** Engines of this file lost so far. */
  losses: number;
  /** Refused until the file changes or the daemon restarts: it crashed while loading, or too often. */
  quarantined: boolean;
  error: LastError;
}

interface LoadRequest {
  path: string;
  name?: string;
  settings: LoadSettings;
  keepAliveMs?: number;
  ticket: Ticket<LoadResult>;
}

/** A load request as the context keeps it: the key of its ticket (../heldTickets.ts) instead of the ticket. */
export type HeldLoad = Omit<LoadRequest, "ticket"> & { ticket: string };

/** The load being admitted: its request, then the plan the engine made of the file, then where it goes. */
export interface Admission {
  request: HeldLoad;
  plan: ModelPlan | null;
  placement: Placement | null;
}

/** A STOP or UNLOAD sent to every model, answered once each model has answered its part. */
export type FanOut =
  | { kind: "stop"; ticket: string; waiting: number; stopped: boolean; dropped: number; error: KekahydeError | null }
  | { kind: "unload"; ticket: string; waiting: number; unloaded: boolean; error: KekahydeError | null };

/** A generation request as the supervisor gets it. */
interface RunRequest {
  id: string;
  /** The client's id for the request (X-Request-Id), which POST /stop {"id"} names; the job id if it gave none. */
  requestId?: string;
  /** A model's name; without it, the default model. */
  model?: string;
  /** Where the named model's file is, when it is not loaded but the catalogue has it: it is loaded first, with these settings. */
  load?: { path: string; settings?: LoadSettings };
  /** Names close to an unknown `model`, for the refusal. */
  suggestions?: string[];
  work: Work;
  onText?: (chunk: string) => void;
  keepAliveMs?: number;
  ticket: Ticket<JobResult>;
}

/** A generation parked while its model is admitted, as the context keeps it: its ticket's key (its `onText` is kept with the ticket). */
export type ParkedRun = Omit<RunRequest, "ticket" | "onText"> & { ticket: string };

export type SupervisorEvent =
  | ({ type: "LOAD" } & LoadRequest)
  | ({ type: "RUN" } & RunRequest)
  /** Stops generations: of one model or all, or only those of request `request` (wherever they are). */
  | { type: "STOP"; model?: string; all: boolean; request?: string; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; model?: string; ticket: Ticket<UnloadResult> }
  | { type: "CANCEL"; job: string }
  | { type: "SHUTDOWN" }
  | { type: "KEEPALIVE.EXPIRED"; name: string }
  | { type: "FANOUT.ANSWER"; fanOut: string; outcome: Outcome<StopResult> | Outcome<UnloadResult> }
  | ModelPhaseEvent
  | MonitorEvent;

export type SupervisorRequestEvent = Extract<SupervisorEvent, { ticket: unknown }>;

export interface SupervisorContext {
  monitorIntervalMs: number;
  maxModels: number;
  maxMemory: MemoryBudget;
  keepAliveMs: number;
  parallel: number;
  maxQueue?: number;
  maxGenerationMs: number | null;
  models: Record<string, ModelEntry>;
  /** Models that have left the set, until their runtime reports their memory free (or stopped). */
  departing: ModelEntry[];
  admission: Admission | null;
  /** Loads that wait for the one being admitted, in order. */
  waitingLoads: HeldLoad[];
  /** Generations for a model that is being admitted on their behalf, by its name: sent to it once it loads. */
  parkedRuns: Record<string, ParkedRun[]>;
  /** STOPs and UNLOADs fanned out to every model, by id; their tickets are kept under FanOut.ticket. */
  fanOuts: Record<string, FanOut>;
  fanOutCount: number;
  /** Uses so far: the source of `useOrder`. */
  uses: number;
  /** The last load that failed: refused before it reached a model (bad file, no room), or failed in its runtime. */
  lastError: LastError | null;
  /** Files whose engine crashed, by real path. */
  crashes: Record<string, CrashRecord>;
  resources: ResourceSample;
}

/** The engine and the resource sampler are not input: they are provided (createSupervisorLogic, ../logic.ts). */
export interface SupervisorInput {
  monitorIntervalMs?: number;
  /** Models loaded at once (default 1: a new model replaces the loaded one). */
  maxModels?: number;
  /** Default: 90% of the memory free for models. */
  maxMemory?: MemoryBudget;
  /** Default keep-alive (default 5 minutes; 0 unload after each request; -1 forever). */
  keepAliveMs?: number;
  /** Generations per model at once (default 1). */
  parallel?: number;
  maxQueue?: number;
  maxGenerationMs?: number | null;
}

