import { KekahydeError, type ErrorCode } from "../../src/errors.ts";
import type { GenerateResult } from "../../src/domain/generation.ts";
import type { EmbedResult, JobResult, TokenizeResult } from "../../src/domain/jobs.ts";
import type { ModelInfo, ModelPlan } from "../../src/domain/models.ts";
import type { Engine, GenerateOptions, LoadedModel, LoadOptions } from "../../src/engine/types.ts";

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {});
  return { promise, resolve, reject };
}

export interface FakeGeneration extends Deferred<JobResult> {
  signal: AbortSignal;
  /** The path of the model it runs on. */
  path: string;
  /** A generation, or an embedding job (which ends with JOB_STOPPED when it was aborted, as the real engine's). */
  kind: "generate" | "embed" | "tokenize";
}

/**
 * An engine whose every step waits for the test to say how it ends: plans, loads, generations, disposals
 * and the loss of a model's engine. Only for the machines' model-based tests, where timing must be
 * controlled; never for tests that claim the daemon works.
 */
export class FakeEngine implements Engine {
  /** The plan being made (the supervisor admits one load at a time). */
  validation: Deferred<ModelPlan> | null = null;
  private validatedPath = "";
  /** Loads under way, oldest first. */
  loadings: Array<Deferred<LoadedModel> & { path: string }> = [];
  /** Running generations, oldest first, across all models; each ends when the test says. */
  generations: FakeGeneration[] = [];
  /** Models being freed, until finishDisposals(). */
  disposals: Array<Deferred<void>> = [];
  disposedModels = 0;
  private models = 0;
  private losses = new Map<string, Deferred<KekahydeError>>();
  /** What plan() says a model needs (bytes), unless `bytesByPath` names its file. */
  modelBytes = 1000;
  bytesByPath = new Map<string, number>();

  get generation(): FakeGeneration | null {
    return this.generations[0] ?? null;
  }

  plan(path: string): Promise<ModelPlan> {
    this.validation = deferred();
    this.validatedPath = path;
    return this.validation.promise;
  }

  load({ path }: ModelPlan, options: LoadOptions): Promise<LoadedModel> {
    options.onProgress?.(0.5);
    const loading = { ...deferred<LoadedModel>(), path };
    this.loadings.push(loading);
    return loading.promise;
  }

  passValidation(): void {
    this.validation?.resolve(fakePlan(this.validatedPath, this.bytesByPath.get(this.validatedPath) ?? this.modelBytes));
    this.validation = null;
  }
  failValidation(code: ErrorCode = "MODEL_INVALID"): void {
    this.validation?.reject(new KekahydeError(code, "fake validation failure"));
    this.validation = null;
  }
  finishLoad(): void {
    const loading = this.loadings.shift();
    if (!loading) return;
    const info: ModelInfo = {
      path: loading.path,
      name: `fake-${++this.models}`,
      architecture: "llama",
      size_bytes: 1,
      context_size: 64,
      train_context_size: 64,
      threads: 1,
      gpu: false,
      gpu_layers: 0,
      engine_build: "fake",
      flash_attention: "auto",
      engine_pid: 0,
      parallel: 1,
    };
    const lost = deferred<KekahydeError>();
    this.losses.set(loading.path, lost);
    let disposal: Deferred<void> | null = null;
    const model: LoadedModel = {
      info,
      generate: (options: GenerateOptions) => {
        const d = deferred<JobResult>();
        options.onProgress?.({ promptTokens: 1, completionTokens: 0, firstTokenMs: null });
        // An abort is only noticed when the test lets the generation end, as a real engine ends after a token.
        this.generations.push({ ...d, signal: options.signal, path: loading.path, kind: "generate" });
        return d.promise as Promise<GenerateResult>;
      },
      embed: (_request, { signal }) => {
        const d = deferred<JobResult>();
        this.generations.push({ ...d, signal, path: loading.path, kind: "embed" });
        return d.promise as Promise<EmbedResult>;
      },
      rank: () => Promise.reject(new KekahydeError("NOT_SUPPORTED", "the fake engine does not rank")),
      // Held until the test ends it, as generations are, so that the model tests choose when it answers.
      tokenize: (_request, { signal }) => {
        const d = deferred<JobResult>();
        this.generations.push({ ...d, signal, path: loading.path, kind: "tokenize" });
        return d.promise as Promise<TokenizeResult>;
      },
      detokenize: ({ tokens }) => Promise.resolve({ text: String.fromCharCode(...tokens) }),
      dispose: () => {
        if (!disposal) {
          disposal = deferred<void>();
          this.disposals.push(disposal);
          void disposal.promise.then(() => {
            this.disposedModels += 1;
            // A freed model's generations end with it, as a real engine aborts them before freeing.
            this.generations = this.generations.filter((g) => g.path !== loading.path);
          });
        }
        return disposal.promise;
      },
      lost: lost.promise,
    };
    loading.resolve(model);
  }
  failLoad(code: ErrorCode = "MODEL_INVALID"): void {
    this.loadings.shift()?.reject(new KekahydeError(code, `fake load failure (${code})`));
  }
  /** The engine behind the model loaded from `path` ends by itself (its process died). */
  loseEngine(path: string): void {
    this.losses.get(path)?.resolve(new KekahydeError("ENGINE_CRASHED", "fake engine process crashed"));
  }
  finishDisposals(): void {
    for (const d of this.disposals.splice(0)) d.resolve();
  }
  /** Ends the oldest generation, or the oldest one on the model from `path`. */
  finishGeneration(path?: string): void {
    const generation = this.take(path);
    const cancelled = generation?.signal.aborted;
    // A lookup in the vocabulary is too quick to be stopped.
    if (generation?.kind === "tokenize") return generation.resolve({ tokens: [1] });
    if (generation?.kind === "embed") {
      if (cancelled) generation.reject(new KekahydeError("JOB_STOPPED", "fake embedding stopped"));
      else generation.resolve({ vectors: [[1]], promptTokens: 1 });
      return;
    }
    generation?.resolve({
      text: cancelled ? "partial" : "done",
      finishReason: cancelled ? "cancelled" : "stop",
      promptTokens: 1,
      completionTokens: 1,
      durationMs: 1,
      firstTokenMs: 1,
    });
  }
  failGeneration(code: ErrorCode, path?: string): void {
    this.take(path)?.reject(new KekahydeError(code, `fake ${code}`));
  }
  private take(path?: string): FakeGeneration | undefined {
    const i = path === undefined ? 0 : this.generations.findIndex((g) => g.path === path);
    return i < 0 ? undefined : this.generations.splice(i, 1)[0];
  }
  async dispose(): Promise<void> {}
}

/** What the fake engine plans for a file: `bytes` of memory, on a machine with plenty free. */
export function fakePlan(path: string, bytes = 1000): ModelPlan {
  return {
    path,
    name: null,
    architecture: "llama",
    fileSize: 1,
    mtimeMs: 0,
    trainContextSize: 64,
    vocabularySize: 32,
    contextSize: 64,
    sequences: 1,
    bytes,
    weightsBytes: bytes,
    kvCacheBytes: 0,
    freeBytes: 1e12,
    onGpu: false,
  };
}

/** Lets promise callbacks and actor events settle: one turn of the event loop runs every chain of microtasks. */
export async function settle(): Promise<void> {
  await new Promise((r) => setImmediate(r));
}
