import { fromCallback, fromPromise, type AnyActorRef, type EventObject } from "xstate";
import { ENGINE_FAILURES, KekahydeError, toKekahydeError } from "../errors.ts";
import type { GenerateResult, GenerationProgress } from "../domain/generation.ts";
import type { JobResult, Work } from "../domain/jobs.ts";
import type { ModelInfo, ModelPlan } from "../domain/models.ts";
import type { Engine, LoadedModel } from "./types.ts";

/** The actor system an actor runs in. */
type AnyActorSystem = AnyActorRef["system"];

/**
 * The engine as actors: what a machine invokes or spawns to load, run and free a model. Each reports by
 * events; a generation's reports name its job by the id the machine gave it.
 */
export type EngineEvent =
  | { type: "LOAD.PROGRESS"; progress: number }
  /** The loaded model's facts; the model itself went to the `keep` the loader was made with. */
  | { type: "LOAD.DONE"; model: ModelInfo }
  | { type: "LOAD.FAILED"; error: KekahydeError }
  | { type: "JOB.PROGRESS"; job: string; progress: GenerationProgress }
  /** A stopped generation's text so far: its requester is answered before the engine has ended. */
  | { type: "JOB.STOPPED"; job: string; result: GenerateResult }
  | { type: "JOB.DONE"; job: string; result: JobResult }
  | { type: "JOB.FAILED"; job: string; error: KekahydeError }
  | { type: "ENGINE.LOST"; error: KekahydeError };

export interface LoadModelInput {
  plan: ModelPlan;
  /** Who the model is loaded for (the runtime actor's session id): `keep` is told. */
  owner: string;
}

/** Where a loader puts the model it loaded, before LOAD.DONE reports its facts: the handle never travels in an event. */
export type KeepModel = (system: AnyActorSystem, owner: string, model: LoadedModel) => void;

/**
 * A loader of planned models on `engine`. Stopping this actor (leaving the loading state) aborts the load; a
 * model that finishes loading after that is freed.
 */
export const loadModelActor = (engine: Engine, keep: KeepModel) =>
  fromCallback<EventObject, LoadModelInput, EngineEvent>(({ input, sendBack, system }) => {
    const abort = new AbortController();
    engine.load(input.plan, { signal: abort.signal, onProgress: (progress) => sendBack({ type: "LOAD.PROGRESS", progress }) }).then(
      async (model) => {
        if (abort.signal.aborted) return void (await model.dispose().catch(() => {}));
        keep(system, input.owner, model);
        sendBack({ type: "LOAD.DONE", model: model.info });
      },
      (e) => sendBack({ type: "LOAD.FAILED", error: toKekahydeError(e, "MODEL_INVALID") }),
    );
    return () => abort.abort();
  });

export interface JobInput {
  model: LoadedModel;
  /** The job this actor serves; every report names it. */
  job: string;
  work: Work;
  /** Receives a generation's text as it is decoded. It goes straight to the requester, not through the machine. */
  onText?: (chunk: string) => void;
  /** Abort after this long (Infinity: never); a generation then reports finish reason "timeout". */
  timeLimitMs?: number;
}

/** How often, at most, token counts are reported to the machine (the first token always is). */
const PROGRESS_INTERVAL_MS = 100;

/**
 * Runs one job on the model: a generation, embeddings, ranking or tokens. The ABORT event (or stopping the
 * actor) aborts it inside the engine.
 *
 * On ABORT a generation reports JOB.STOPPED at once, with the text the requester has been sent so far: the
 * requester need not wait for the token in flight (a whole token time on a large model: measured ~70 ms on a
 * 1.1B model here, hundreds of ms for 7B on CPU). Text decoded after the abort is dropped, so the answer and
 * the stream agree. JOB.DONE still follows when the engine has really ended; only that frees the slot.
 */
export const jobActor = fromCallback<{ type: "ABORT" }, JobInput, EngineEvent>(({ input, sendBack, receive }) => {
  const abort = new AbortController();
  const started = performance.now();
  const { work } = input;
  let sent = "";
  let latest: GenerationProgress = { completionTokens: 0, firstTokenMs: null };
  let stopped = false;
  receive((event) => {
    if (event.type !== "ABORT" || stopped) return;
    stopped = true;
    abort.abort();
    if (work.kind !== "generate") return;
    sendBack({
      type: "JOB.STOPPED",
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
  const options = { signal: abort.signal };
  const running: Promise<JobResult> =
    work.kind === "generate"
      ? input.model.generate({
          ...work.request,
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
            sendBack({ type: "JOB.PROGRESS", job: input.job, progress });
          },
        })
      : work.kind === "embed"
        ? input.model.embed(work.request, options)
        : work.kind === "rank"
          ? input.model.rank(work.request, options)
          : work.kind === "tokenize"
            ? input.model.tokenize(work.request, options)
            : input.model.detokenize(work.request, options);
  running
    .then(
      (result) => sendBack({ type: "JOB.DONE", job: input.job, result: timedOut && "finishReason" in result ? { ...result, finishReason: "timeout" } : result }),
      (e) => {
        const error = toKekahydeError(e, "ENGINE_FAILURE");
        // A job other than a generation that was asked to stop ends as stopped, unless the engine itself failed.
        const asked = stopped && work.kind !== "generate" && !ENGINE_FAILURES.has(error.code);
        sendBack({ type: "JOB.FAILED", job: input.job, error: asked ? new KekahydeError("JOB_STOPPED", "Stopped before it finished. Send it again if you still want it.") : error });
      },
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
