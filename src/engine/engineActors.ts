import { fromCallback, fromPromise, type EventObject } from "xstate";
import { toKekahydeError, type KekahydeError } from "../errors.ts";
import type { GenerateResult, GenerationProgress, GenerationRequest } from "../domain/generation.ts";
import type { ModelPlan } from "../domain/models.ts";
import type { Engine, LoadedModel } from "./types.ts";

/**
 * The engine as actors: what a machine invokes or spawns to load, run and free a model. Each reports by
 * events; a generation's reports name its job by the id the machine gave it.
 */
export type EngineEvent =
  | { type: "LOAD.PROGRESS"; progress: number }
  | { type: "LOAD.DONE"; model: LoadedModel }
  | { type: "LOAD.FAILED"; error: KekahydeError }
  | { type: "GENERATION.PROGRESS"; job: string; progress: GenerationProgress }
  | { type: "GENERATION.STOPPED"; job: string; result: GenerateResult }
  | { type: "GENERATION.DONE"; job: string; result: GenerateResult }
  | { type: "GENERATION.FAILED"; job: string; error: KekahydeError }
  | { type: "ENGINE.LOST"; error: KekahydeError };

export interface LoadModelInput {
  engine: Engine;
  plan: ModelPlan;
}

/**
 * Loads a planned model. Stopping this actor (leaving the loading state) aborts the load; a model that
 * finishes loading after that is freed.
 */
export const loadModelActor = fromCallback<EventObject, LoadModelInput, EngineEvent>(({ input, sendBack }) => {
  const abort = new AbortController();
  input.engine
    .load(input.plan, { signal: abort.signal, onProgress: (progress) => sendBack({ type: "LOAD.PROGRESS", progress }) })
    .then(
      async (model) => {
        if (abort.signal.aborted) return void (await model.dispose().catch(() => {}));
        sendBack({ type: "LOAD.DONE", model });
      },
      (e) => sendBack({ type: "LOAD.FAILED", error: toKekahydeError(e, "MODEL_INVALID") }),
    );
  return () => abort.abort();
});

export interface GenerateInput {
  model: LoadedModel;
  /** The job this generation serves; every report names it. */
  job: string;
  request: GenerationRequest;
  /** Receives text as it is decoded. It goes straight to the requester, not through the machine. */
  onText?: (chunk: string) => void;
  /** Abort after this long (Infinity: never) and report finish reason "timeout". */
  timeLimitMs?: number;
}

/** How often, at most, token counts are reported to the machine (the first token always is). */
const PROGRESS_INTERVAL_MS = 100;

/**
 * Runs one generation. The ABORT event (or stopping the actor) aborts it inside the engine.
 *
 * On ABORT the actor reports GENERATION.STOPPED at once, with the text the requester has been sent so far:
 * the requester need not wait for the token in flight (a whole token time on a large model: measured ~70 ms
 * on a 1.1B model here, hundreds of ms for 7B on CPU). Text decoded after the abort is dropped, so the answer
 * and the stream agree. GENERATION.DONE still follows when the engine has really ended; only that frees
 * the slot.
 */
export const generateActor = fromCallback<{ type: "ABORT" }, GenerateInput, EngineEvent>(({ input, sendBack, receive }) => {
  const abort = new AbortController();
  const started = performance.now();
  let sent = "";
  let latest: GenerationProgress = { completionTokens: 0, firstTokenMs: null };
  let stopped = false;
  receive((event) => {
    if (event.type !== "ABORT" || stopped) return;
    stopped = true;
    abort.abort();
    sendBack({
      type: "GENERATION.STOPPED",
      job: input.job,
      result: {
        text: sent,
        finishReason: "cancelled",
        promptTokens: latest.promptTokens ?? 0,
        completionTokens: latest.completionTokens,
        durationMs: performance.now() - started,
        firstTokenMs: latest.firstTokenMs,
      },
    });
  });
  let lastReport = 0;
  let timedOut = false;
  const limit = input.timeLimitMs ?? Infinity;
  const timer = Number.isFinite(limit)
    ? setTimeout(() => {
        timedOut = true;
        abort.abort();
      }, limit)
    : undefined;
  input.model
    .generate({
      ...input.request,
      signal: abort.signal,
      onText: (chunk) => {
        if (stopped) return;
        sent += chunk;
        input.onText?.(chunk);
      },
      onProgress: (progress) => {
        if (stopped) return;
        latest = progress;
        const now = performance.now();
        if (progress.completionTokens > 1 && now - lastReport < PROGRESS_INTERVAL_MS) return;
        lastReport = now;
        sendBack({ type: "GENERATION.PROGRESS", job: input.job, progress });
      },
    })
    .then(
      (result) => sendBack({ type: "GENERATION.DONE", job: input.job, result: timedOut ? { ...result, finishReason: "timeout" } : result }),
      (e) => sendBack({ type: "GENERATION.FAILED", job: input.job, error: toKekahydeError(e, "ENGINE_FAILURE") }),
    )
    .finally(() => clearTimeout(timer));
  return () => {
    clearTimeout(timer);
    abort.abort();
  };
});

/** Frees a model (unload, replace, engine failure, shutdown). Never fails: a dispose error leaves nothing to retry. */
export const disposeModelActor = fromPromise<void, { model: LoadedModel | null }>(async ({ input }) => {
  await input.model?.dispose().catch(() => {});
});

/** Watches a loaded model's engine: reports ENGINE.LOST if it ends without being asked. */
export const watchEngineActor = fromCallback<EventObject, { model: LoadedModel | null }, EngineEvent>(({ input, sendBack }) => {
  let watching = true;
  void input.model?.lost.then((error) => {
    if (watching) sendBack({ type: "ENGINE.LOST", error });
  });
  return () => {
    watching = false;
  };
});
