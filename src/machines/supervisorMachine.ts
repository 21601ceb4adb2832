import { basename } from "node:path";
import { assertEvent, assign, enqueueActions, fromPromise, setup, type ActorRefFrom } from "xstate";
import { KekahydeError } from "../errors.ts";
import type { Engine, GenerateResult, GenerationRequest, LoadSettings, ModelPlan } from "../engine/types.ts";
import { monitorActor, type MonitorEvent } from "../monitor/monitorActor.ts";
import { EMPTY_SAMPLE, type ResourceSample, type ResourceSampler } from "../monitor/resourceSampler.ts";
import { place, type Placement } from "./placement.ts";
import { errorRecord, NO_MODEL, runtimeMachine, SHUTTING_DOWN, type LastError, type LoadResult, type ModelPhaseEvent, type RuntimePhase, type StopResult, type UnloadResult } from "./runtimeMachine.ts";
import { createTicket, gather, type Ticket } from "./ticket.ts";

/**
 * The supervisor: owns the loaded models, one runtime-machine actor each, and decides which model a request
 * goes to, which models make room for a new one (least recently used idle ones first, within
 * `maxModels` and the memory budget), and when an idle model's keep-alive has run out.
 *
 *   serving.ready ──LOAD──▶ serving.admitting ──(the file's plan fits)──▶ evict, spawn/reload ──▶ ready
 *                           (checks the file, estimates its memory) └─(does not fit)──▶ 409 / 507 ──▶ ready
 *   SHUTDOWN ──▶ stopping (every model shuts down) ──▶ stopped
 *
 * Requests for a model are forwarded to its runtime actor with their ticket, so the runtime answers them.
 * Each runtime reports the phase it enters (MODEL.PHASE); that is how the supervisor knows which models are
 * busy, when keep-alive starts counting, and when a model has gone (unloaded, failed, evicted).
 */

export type RuntimeRef = ActorRefFrom<typeof runtimeMachine>;

/** A loaded model, as the supervisor keeps it. */
export interface ModelEntry {
  name: string;
  ref: RuntimeRef;
  /** The real path of the file. */
  path: string;
  /** "new": spawned, its load not yet under way. */
  phase: RuntimePhase | "new";
  bytes: number;
  /** When its load was accepted: the most recent one is the default model. */
  loadedAt: number;
  lastUsed: number;
  /** Order of last use (a counter: many uses fall in one millisecond); eviction takes the lowest first. */
  useOrder: number;
  /** How long it stays loaded once idle: 0 unload at once, -1 forever. */
  keepAliveMs: number;
  expiresAt: number | null;
}

/** `--max-memory`: a number of bytes, or a fraction of the memory free for models at each load. */
export type MemoryBudget = { bytes: number } | { fraction: number };

export interface LoadRequest {
  path: string;
  name?: string;
  settings: LoadSettings;
  keepAliveMs?: number;
  ticket: Ticket<LoadResult>;
}

export type SupervisorEvent =
  | ({ type: "LOAD" } & LoadRequest)
  | { type: "RUN"; model?: string; request: GenerationRequest; onText?: (chunk: string) => void; keepAliveMs?: number; ticket: Ticket<GenerateResult> }
  | { type: "STOP"; model?: string; all: boolean; ticket: Ticket<StopResult> }
  | { type: "UNLOAD"; model?: string; ticket: Ticket<UnloadResult> }
  | { type: "CANCEL"; job: Ticket<GenerateResult> }
  | { type: "SHUTDOWN" }
  | { type: "KEEPALIVE.EXPIRED"; name: string; expiresAt: number }
  | ModelPhaseEvent
  | MonitorEvent;

export type SupervisorRequestEvent = Extract<SupervisorEvent, { ticket: unknown }>;

export interface SupervisorContext {
  engine: Engine;
  sampleResources: ResourceSampler;
  monitorIntervalMs: number;
  maxModels: number;
  maxMemory: MemoryBudget;
  keepAliveMs: number;
  parallel: number;
  maxQueue?: number;
  maxGenerationMs: number | null;
  models: Record<string, ModelEntry>;
  /** Models evicted, expired or unloaded, until their runtime has freed the model and stopped. */
  retiring: RuntimeRef[];
  /** The load being checked, and those that wait for it. */
  admission: LoadRequest | null;
  waitingLoads: LoadRequest[];
  /** The last load refused before it reached a model (bad file, no room). */
  lastError: LastError | null;
  resources: ResourceSample;
}

export interface SupervisorInput {
  engine: Engine;
  sampleResources: ResourceSampler;
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

export const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;
export const DEFAULT_MEMORY_FRACTION = 0.9;

/** A model's default name: its file name without `.gguf`. */
export const defaultModelName = (path: string): string => basename(path).replace(/\.gguf$/i, "");

const entries = (context: SupervisorContext): ModelEntry[] => Object.values(context.models);
const nextUse = (context: SupervisorContext): number => Math.max(0, ...entries(context).map((m) => m.useOrder)) + 1;

/** The model requests without a `model` go to: the one loaded most recently. */
export function defaultModel(context: SupervisorContext): ModelEntry | null {
  return entries(context).reduce<ModelEntry | null>((best, m) => (best === null || m.loadedAt > best.loadedAt ? m : best), null);
}

const entryOf = (context: SupervisorContext, ref: RuntimeRef): ModelEntry | undefined => entries(context).find((m) => m.ref === ref);

function budgetBytes(context: SupervisorContext, plan: ModelPlan): number {
  if ("bytes" in context.maxMemory) return context.maxMemory.bytes;
  const held = entries(context).reduce((sum, m) => sum + m.bytes, 0);
  return Math.floor(context.maxMemory.fraction * (plan.freeBytes + held));
}

/**
 * A model's phase as of now, read from its runtime's snapshot: a report (MODEL.PHASE) arrives after the
 * runtime has moved, and eviction must not act on a model that has just started work.
 */
export function livePhase(entry: ModelEntry): ModelEntry["phase"] {
  const value = entry.ref.getSnapshot().value;
  const phase = (typeof value === "string" ? value : Object.keys(value)[0]) as RuntimePhase;
  return entry.phase === "new" && phase === "empty" ? "new" : phase;
}

function placementOf(context: SupervisorContext, plan: ModelPlan): Placement {
  const name = context.admission!.name ?? defaultModelName(context.admission!.path);
  const loaded = entries(context).map((m) => ({ ...m, phase: livePhase(m), lastUsed: m.useOrder }));
  return place(loaded, { name, bytes: plan.bytes }, { maxModels: context.maxModels, budgetBytes: budgetBytes(context, plan) });
}

const gib = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;

function unknownModel(context: SupervisorContext, name: string): KekahydeError {
  const loaded = Object.keys(context.models);
  return new KekahydeError(
    "UNKNOWN_MODEL",
    `No model named "${name}" is loaded (loaded: ${loaded.length ? loaded.join(", ") : "none"}). Load it with POST /load_model {"path": "...", "name": "${name}"}.`,
    { model: name, loaded },
  );
}

/** Checks a file and estimates its memory before anything is evicted for it. */
const admitModel = fromPromise<ModelPlan, { engine: Engine; path: string; settings: LoadSettings }>(({ input }) => input.engine.validate(input.path, input.settings));

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
  },
  actors: {
    runtime: runtimeMachine,
    admitModel,
    monitor: monitorActor,
  },
  guards: {
    namesUnknownModel: ({ context, event }) => "model" in event && event.model !== undefined && !(event.model in context.models),
    hasNoModels: ({ context }) => entries(context).length === 0,
    hasWaitingLoads: ({ context }) => context.waitingLoads.length > 0,
    planFits: ({ context, event }) => placementOf(context, (event as unknown as { output: ModelPlan }).output).ok,
    isCurrentExpiry: ({ context, event }) => {
      assertEvent(event, "KEEPALIVE.EXPIRED");
      const m = context.models[event.name];
      return m !== undefined && m.phase === "idle" && m.expiresAt === event.expiresAt;
    },
    isRetiring: ({ context, event }) => {
      assertEvent(event, "MODEL.PHASE");
      return context.retiring.includes(event.ref);
    },
    allStopped: ({ context }) => entries(context).length === 0 && context.retiring.length === 0,
  },
  actions: {
    storeSample: assign({
      resources: ({ event }) => {
        assertEvent(event, "MONITOR.SAMPLE");
        return event.sample;
      },
    }),
    refuse: ({ event }, params: { code: "SHUTTING_DOWN" | "NO_MODEL"; message: string }) => {
      if ("ticket" in event) event.ticket.reject(new KekahydeError(params.code, params.message));
    },
    refuseUnknownModel: ({ context, event }) => {
      if ("ticket" in event && "model" in event && event.model !== undefined) event.ticket.reject(unknownModel(context, event.model));
    },

    queueLoad: assign({
      waitingLoads: ({ context, event }) => {
        assertEvent(event, "LOAD");
        const { type: _, ...load } = event;
        return [...context.waitingLoads, load];
      },
    }),
    takeNextLoad: assign(({ context }) => ({ admission: context.waitingLoads[0], waitingLoads: context.waitingLoads.slice(1) })),
    rejectAdmission: assign(({ context, event }) => {
      const raw = (event as unknown as { error: unknown }).error;
      const error = raw instanceof KekahydeError ? raw : new KekahydeError("MODEL_INVALID", String(raw));
      context.admission?.ticket.reject(error);
      return { admission: null, lastError: errorRecord(error) };
    }),
    refusePlacement: assign(({ context, event }) => {
      const placement = placementOf(context, (event as unknown as { output: ModelPlan }).output);
      let error: KekahydeError | null = null;
      const loading = (name: string) => ["new", "loading"].includes(context.models[name] ? livePhase(context.models[name]) : "");
      if (!placement.ok && placement.reason === "busy" && placement.busy.length > 0 && placement.busy.every(loading)) {
        error = new KekahydeError(
          "MODEL_LOADING",
          `A model is already loading (${placement.busy.join(", ")}) and no other can make room (--max-models ${context.maxModels}). Wait until GET /status shows it "idle", then retry.`,
          { busy: placement.busy, max_models: context.maxModels },
        );
      } else if (!placement.ok && placement.reason === "busy") {
        error = new KekahydeError(
            "BUSY",
            `${context.maxModels} model(s) are loaded (--max-models) and none can be unloaded to make room: ${placement.busy.join(", ")} ${placement.busy.length === 1 ? "is" : "are"} busy. POST /stop first (with {"model": "<name>"} for one model), or wait, then retry.`,
            { busy: placement.busy, max_models: context.maxModels },
          );
      } else if (!placement.ok) {
        error = new KekahydeError(
            "INSUFFICIENT_MEMORY",
            `Not enough memory budget for this model: it needs about ${gib(placement.neededBytes)} but ${gib(placement.availableBytes)} of the --max-memory budget is left after unloading every idle model. Unload or stop a model, raise --max-memory, or load with a smaller context_size.`,
            { needed_bytes: placement.neededBytes, available_bytes: placement.availableBytes },
          );
      }
      if (error) context.admission?.ticket.reject(error);
      return { admission: null, lastError: error ? errorRecord(error) : context.lastError };
    }),
    /** Unloads the models the placement chose, least recently used first; they retire until they stop. */
    evictForPlacement: enqueueActions(({ context, event, enqueue }) => {
      const placement = placementOf(context, (event as unknown as { output: ModelPlan }).output);
      if (!placement.ok) return;
      const models = { ...context.models };
      const retiring = [...context.retiring];
      for (const name of placement.evict) {
        enqueue.sendTo(models[name].ref, { type: "UNLOAD", ticket: createTicket<UnloadResult>() });
        retiring.push(models[name].ref);
        delete models[name];
      }
      enqueue.assign({ models, retiring });
    }),
    /** Hands the load to the model's runtime: a new one, or the one of that name, which replaces its model. */
    startLoad: enqueueActions(({ context, event, enqueue, self }) => {
      const plan = (event as unknown as { output: ModelPlan }).output;
      const load = context.admission!;
      const name = load.name ?? defaultModelName(load.path);
      const now = Date.now();
      const existing = context.models[name];
      // Spawned inside assign, not with spawnChild, because the entry keeps the reference.
      enqueue.assign(({ spawn }) => {
        const runtime =
          existing?.ref ??
          spawn("runtime", {
            id: `model:${name}:${now}`,
            input: {
              engine: context.engine,
              name,
              supervisor: self,
              maxQueue: context.maxQueue,
              maxGenerationMs: context.maxGenerationMs,
              slots: context.parallel,
            },
          });
        const entry: ModelEntry = {
          name,
          ref: runtime,
          path: plan.path,
          phase: existing?.phase ?? "new",
          bytes: plan.bytes,
          loadedAt: now,
          lastUsed: now,
          useOrder: nextUse(context),
          keepAliveMs: load.keepAliveMs ?? existing?.keepAliveMs ?? context.keepAliveMs,
          expiresAt: null,
        };
        return { models: { ...context.models, [name]: entry }, admission: null, lastError: null };
      });
      enqueue.sendTo(
        ({ context: c }) => c.models[name].ref,
        { type: "LOAD", path: plan.path, settings: { ...load.settings, parallel: context.parallel }, ticket: load.ticket },
      );
    }),

    forwardRun: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "RUN");
      const target = event.model !== undefined ? context.models[event.model] : defaultModel(context);
      if (!target) return;
      enqueue.assign({
        models: {
          ...context.models,
          [target.name]: { ...target, lastUsed: Date.now(), useOrder: nextUse(context), keepAliveMs: event.keepAliveMs ?? target.keepAliveMs },
        },
      });
      enqueue.sendTo(target.ref, { type: "RUN", request: event.request, onText: event.onText, ticket: event.ticket });
    }),
    forwardCancel: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "CANCEL");
      for (const m of entries(context)) enqueue.sendTo(m.ref, event);
    }),
    /** STOP for one model goes to it; without a model, to all, answered once all have stopped. */
    forwardStop: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "STOP");
      const targets = event.model !== undefined ? [context.models[event.model]] : entries(context);
      const parts = targets.map((m) => {
        const ticket = createTicket<StopResult>();
        enqueue.sendTo(m.ref, { type: "STOP", all: event.all, ticket });
        return ticket;
      });
      gather(parts, event.ticket, (results) => ({ stopped: results.some((r) => r.stopped), dropped: results.reduce((n, r) => n + r.dropped, 0) }));
    }),
    forwardUnload: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "UNLOAD");
      const targets = event.model !== undefined ? [context.models[event.model]] : entries(context);
      const parts = targets.map((m) => {
        const ticket = createTicket<UnloadResult>();
        enqueue.sendTo(m.ref, { type: "UNLOAD", ticket });
        return ticket;
      });
      gather(parts, event.ticket, (results) => ({ unloaded: results.some((r) => r.unloaded) }));
    }),

    /** Keeps the phase a model reports; idle starts its keep-alive, anything else stops it. */
    recordPhase: assign({
      models: ({ context, event }) => {
        assertEvent(event, "MODEL.PHASE");
        const m = entryOf(context, event.ref);
        if (!m) return context.models;
        // A fresh runtime's first report is its initial `empty`, before its load starts: not a departure.
        const phase = m.phase === "new" && event.phase === "empty" ? "new" : event.phase;
        const expiresAt = phase === "idle" && m.keepAliveMs > 0 ? Date.now() + m.keepAliveMs : null;
        const used = phase === "idle" ? { lastUsed: Date.now(), useOrder: nextUse(context) } : {};
        return { ...context.models, [m.name]: { ...m, phase, expiresAt, ...used } };
      },
    }),
    armKeepAlive: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      const m = entryOf(context, event.ref);
      if (!m || m.phase !== "idle") return;
      if (m.keepAliveMs === 0) {
        enqueue.raise({ type: "KEEPALIVE.EXPIRED", name: m.name, expiresAt: m.expiresAt! });
        return;
      }
      if (m.expiresAt !== null) enqueue.raise({ type: "KEEPALIVE.EXPIRED", name: m.name, expiresAt: m.expiresAt }, { delay: m.keepAliveMs });
    }),
    /**
     * A model whose runtime reports `phase` leaves the set and its actor is stopped: `empty` (unloaded, its load
     * failed, its engine failed; not a fresh runtime's first report) while serving, `stopped` at shutdown.
     */
    dropModel: enqueueActions(({ context, event, enqueue }, params: { phase: "empty" | "stopped" }) => {
      assertEvent(event, "MODEL.PHASE");
      const m = entryOf(context, event.ref);
      if (!m || event.phase !== params.phase || (params.phase === "empty" && m.phase === "new")) return;
      const { [m.name]: _, ...models } = context.models;
      enqueue.assign({ models });
      enqueue.stopChild(m.ref);
    }),
    retireExpired: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "KEEPALIVE.EXPIRED");
      const m = context.models[event.name];
      const { [m.name]: _, ...models } = context.models;
      enqueue.sendTo(m.ref, { type: "UNLOAD", ticket: createTicket<UnloadResult>() });
      enqueue.assign({ models, retiring: [...context.retiring, m.ref] });
    }),
    /** A retired runtime has freed its model (empty) or shut down (stopped): it is stopped and forgotten. */
    releaseRetired: enqueueActions(({ context, event, enqueue }) => {
      assertEvent(event, "MODEL.PHASE");
      if (event.phase !== "empty" && event.phase !== "stopped") return;
      enqueue.stopChild(event.ref);
      enqueue.assign({ retiring: context.retiring.filter((r) => r !== event.ref) });
    }),

    failPendingLoads: assign(({ context }) => {
      const error = new KekahydeError(SHUTTING_DOWN.code, SHUTTING_DOWN.message);
      context.admission?.ticket.reject(error);
      for (const load of context.waitingLoads) load.ticket.reject(error);
      return { admission: null, waitingLoads: [] };
    }),
    shutDownModels: enqueueActions(({ context, enqueue }) => {
      for (const ref of [...entries(context).map((m) => m.ref), ...context.retiring]) enqueue.sendTo(ref, { type: "SHUTDOWN" });
    }),
  },
}).createMachine({
  id: "supervisor",
  context: ({ input }) => ({
    engine: input.engine,
    sampleResources: input.sampleResources,
    monitorIntervalMs: input.monitorIntervalMs ?? 1000,
    maxModels: Math.max(1, input.maxModels ?? 1),
    maxMemory: input.maxMemory ?? { fraction: DEFAULT_MEMORY_FRACTION },
    keepAliveMs: input.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS,
    parallel: Math.max(1, input.parallel ?? 1),
    maxQueue: input.maxQueue,
    maxGenerationMs: input.maxGenerationMs ?? null,
    models: {},
    retiring: [],
    admission: null,
    waitingLoads: [],
    lastError: null,
    resources: EMPTY_SAMPLE,
  }),
  invoke: {
    id: "monitor",
    src: "monitor",
    input: ({ context }) => ({ sample: context.sampleResources, intervalMs: context.monitorIntervalMs }),
  },
  on: {
    "MONITOR.SAMPLE": { actions: "storeSample" },
  },
  initial: "serving",
  states: {
    serving: {
      on: {
        SHUTDOWN: { target: "stopping", actions: ["failPendingLoads", "shutDownModels"] },
        RUN: [
          { guard: "namesUnknownModel", actions: "refuseUnknownModel" },
          { guard: "hasNoModels", actions: { type: "refuse", params: NO_MODEL } },
          { actions: "forwardRun" },
        ],
        STOP: [{ guard: "namesUnknownModel", actions: "refuseUnknownModel" }, { actions: "forwardStop" }],
        UNLOAD: [{ guard: "namesUnknownModel", actions: "refuseUnknownModel" }, { actions: "forwardUnload" }],
        CANCEL: { actions: "forwardCancel" },
        "MODEL.PHASE": [
          { guard: "isRetiring", actions: "releaseRetired" },
          { actions: ["recordPhase", "armKeepAlive", { type: "dropModel", params: { phase: "empty" } }] },
        ],
        "KEEPALIVE.EXPIRED": { guard: "isCurrentExpiry", actions: "retireExpired" },
      },
      initial: "ready",
      states: {
        ready: {
          always: { guard: "hasWaitingLoads", target: "admitting", actions: "takeNextLoad" },
          on: {
            LOAD: { target: "admitting", actions: ["queueLoad", "takeNextLoad"] },
          },
        },
        admitting: {
          invoke: {
            id: "admission",
            src: "admitModel",
            input: ({ context }) => ({ engine: context.engine, path: context.admission!.path, settings: { ...context.admission!.settings, parallel: context.parallel } }),
            onDone: [
              { guard: "planFits", target: "ready", actions: ["evictForPlacement", "startLoad"] },
              { target: "ready", actions: "refusePlacement" },
            ],
            onError: { target: "ready", actions: "rejectAdmission" },
          },
          on: {
            LOAD: { actions: "queueLoad" },
          },
        },
      },
    },
    stopping: {
      always: { guard: "allStopped", target: "stopped" },
      on: {
        LOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        RUN: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        STOP: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        UNLOAD: { actions: { type: "refuse", params: SHUTTING_DOWN } },
        "MODEL.PHASE": [{ guard: "isRetiring", actions: "releaseRetired" }, { actions: { type: "dropModel", params: { phase: "stopped" } } }],
      },
    },
    stopped: { type: "final" },
  },
});

export type SupervisorMachine = typeof supervisorMachine;
