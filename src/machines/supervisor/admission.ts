import { defaultModelName, type ModelPlan } from "../../domain/models.ts";
import { KekahydeError, toKekahydeError } from "../../errors.ts";
import { place, type Placement } from "./placement.ts";
import type { CrashRecord, HeldLoad, SupervisorContext } from "./types.ts";

/**
 * The rules of admitting a load, as pure functions of the supervisor's context: where the model goes
 * (placement, computed once when its plan arrives), whether its file is quarantined after crashing its
 * engine, and the refusal each reason gets, word for word. The supervisor's guards and actions call them.
 */

/** Engines of one file that may be lost while generating before the file is refused. */
export const CRASHES_BEFORE_QUARANTINE = 3;

/** Where the admitted model goes: computed once, when its plan arrives. */
export function placementOf(context: SupervisorContext, request: HeldLoad, plan: ModelPlan): Placement {
  const name = request.name ?? defaultModelName(request.path);
  const held = [...Object.values(context.models), ...context.departing].reduce((sum, m) => sum + m.bytes, 0);
  const budgetBytes = "bytes" in context.maxMemory ? context.maxMemory.bytes : Math.floor(context.maxMemory.fraction * (plan.freeBytes + held));
  // Layers on a GPU: llama.cpp sizes VRAM itself; only the budget applies.
  const machineBytes = plan.onGpu ? Infinity : plan.freeBytes + held;
  const loaded = Object.values(context.models).map((m) => ({ name: m.name, phase: m.phase, bytes: m.bytes, lastUsed: m.useOrder }));
  return place(loaded, { name, bytes: plan.bytes }, { maxModels: context.maxModels, budgetBytes, machineBytes });
}

const gib = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;

export function unknownModel(context: SupervisorContext, name: string, suggestions: readonly string[] = []): KekahydeError {
  const loaded = Object.keys(context.models);
  const close = [...new Set(suggestions)];
  return new KekahydeError(
    "UNKNOWN_MODEL",
    `No model named "${name}" is loaded or in the models directories (loaded: ${loaded.length ? loaded.join(", ") : "none"}${close.length ? `; close names: ${close.join(", ")}` : ""}). Put its .gguf file in a models directory (GET /status shows them), or load it with POST /load_model {"path": "...", "name": "${name}"}.`,
    { model: name, loaded, suggestions: close },
  );
}


/** The crash record that keeps the admitted file out, if any: same path, same contents, quarantined. */
export function quarantineOf(context: SupervisorContext): CrashRecord | null {
  const plan = context.admission?.plan;
  const record = plan ? context.crashes[plan.path] : undefined;
  return record && record.quarantined && record.fileSize === plan!.fileSize && record.mtimeMs === plan!.mtimeMs ? record : null;
}

/** The refusal for each reason a placement can fail, word for word. */
const refusals = {
  quarantined: (context: SupervisorContext): KekahydeError => {
    const record = quarantineOf(context)!;
    const path = context.admission!.plan!.path;
    return new KekahydeError(
      "MODEL_INVALID",
      `${path} is not loaded again: its engine ${record.losses > 1 ? `was lost ${record.losses} times, last` : "was lost"} at ${record.error.at} (${record.error.message}). The daemon does not retry a file that crashes its engine. Replace the file (a changed file is tried again) or restart the daemon.`,
      { path, crashes: record.losses, last_crash: record.error },
    );
  },
  loading: (context: SupervisorContext): KekahydeError => {
    const p = context.admission!.placement as Extract<Placement, { reason: "loading" }>;
    return new KekahydeError(
      "MODEL_LOADING",
      `A model is already loading (${p.busy.join(", ")}) and no other can make room (--max-models ${context.maxModels}). Wait until GET /status shows it "idle", then retry.`,
      { busy: p.busy, max_models: context.maxModels },
    );
  },
  busy: (context: SupervisorContext): KekahydeError => {
    const p = context.admission!.placement as Extract<Placement, { reason: "busy" }>;
    return new KekahydeError(
      "BUSY",
      `${context.maxModels} model(s) are loaded (--max-models) and none can be unloaded to make room: ${p.busy.join(", ")} ${p.busy.length === 1 ? "is" : "are"} busy. POST /stop first (with {"model": "<name>"} for one model), or wait, then retry.`,
      { busy: p.busy, max_models: context.maxModels },
    );
  },
  budget: (context: SupervisorContext): KekahydeError => {
    const p = context.admission!.placement as Extract<Placement, { reason: "budget" }>;
    return new KekahydeError(
      "INSUFFICIENT_MEMORY",
      `Not enough memory budget for this model: it needs about ${gib(p.neededBytes)} but ${gib(p.availableBytes)} of the --max-memory budget is left after unloading every idle model. Unload or stop a model, raise --max-memory, or load with a smaller context_size.`,
      { needed_bytes: p.neededBytes, available_bytes: p.availableBytes },
    );
  },
  machine: (context: SupervisorContext): KekahydeError => {
    const p = context.admission!.placement as Extract<Placement, { reason: "machine" }>;
    const plan = context.admission!.plan!;
    return new KekahydeError(
      "INSUFFICIENT_MEMORY",
      `Not enough memory for ${plan.name ?? "this model"}: it needs about ${gib(p.neededBytes)} (weights ${gib(plan.weightsBytes)}, KV cache for ${plan.contextSize * plan.sequences} tokens ${gib(plan.kvCacheBytes)}) but ${gib(p.availableBytes)} is available after unloading every idle model. Use a smaller quantization or context_size, or free memory.`,
      { needed_bytes: p.neededBytes, available_bytes: p.availableBytes },
    );
  },
  /** A placement none of the reasons above explains: never expected, and refused rather than left stuck in `placing`. */
  unplaced: (context: SupervisorContext): KekahydeError => {
    const placement = context.admission?.placement ?? null;
    return new KekahydeError(
      "INTERNAL",
      `The daemon could not decide where ${context.admission?.plan?.path ?? "the model"} goes (placement ${JSON.stringify(placement)}). This is a bug in kekahyde: retry, and report it if it happens again.`,
      { placement },
    );
  },
};
export type RefusalReason = keyof typeof refusals;
export const refusalParams = (reason: RefusalReason) => ({ context }: { context: SupervisorContext }) => ({ error: refusals[reason](context) });
/** A file the engine would not plan (unreadable, not GGUF, over a limit): the load's refusal is the engine's error. */
export const invalidFileParams = ({ event }: { event: { error: unknown } }) => ({ error: toKekahydeError(event.error, "MODEL_INVALID") });

/**
 * What the requests waiting for a load on first use get when it is refused. Every model busy or loading means
 * this daemon is full for now: 503 with a retry hint (HAProxy retries it on another daemon of a fleet), not the
 * 409 an explicit /load_model gets. Any other reason is the load's own refusal.
 */
export const parkedRefusalParams = (reason: RefusalReason) => ({ context }: { context: SupervisorContext }) => {
  const error = refusals[reason](context);
  if (reason !== "loading" && reason !== "busy") return { error };
  return { error: new KekahydeError("QUEUE_FULL", `This daemon cannot load the model now: ${error.message}`, { ...error.details, retry_after_s: 1 }) };
};
export const placementIs = (context: SupervisorContext, reason: Exclude<Placement, { ok: true }>["reason"]): boolean => {
  const p = context.admission?.placement;
  return p !== null && p !== undefined && !p.ok && p.reason === reason;
};

