import { KekahydeError, type ErrorCode } from "../../src/errors.ts";
import type { GenerateResult } from "../../src/domain/generation.ts";
import type { ModelInfo, ModelPlan } from "../../src/domain/models.ts";
import type { Engine, GenerateOptions, LoadedModel } from "../../src/engine/types.ts";

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * An engine whose every step waits for the test to say how it ends. Only for the machine's model-based
 * tests, where timing must be controlled; never for tests that claim the daemon works.
 */
export class FakeEngine implements Engine {
  validation: Deferred<ModelPlan> | null = null;
  private validatedPath = "";
  loading: Deferred<LoadedModel> | null = null;
  /** Running generations, oldest first; each ends when the test says. */
  generations: Array<Deferred<GenerateResult> & { signal: AbortSignal }> = [];
  disposedModels = 0;
  private models = 0;
  /** What validate() says a model needs (bytes). */
  modelBytes = 1000;

  get generation(): (Deferred<GenerateResult> & { signal: AbortSignal }) | null {
    return this.generations[0] ?? null;
  }

  plan(path: string): Promise<ModelPlan> {
    this.validation = deferred();
    this.validatedPath = path;
    return this.validation.promise;
  }

  load({ path }: ModelPlan): Promise<LoadedModel> {
    this.loading = deferred();
    this.loading.promise.catch(() => {});
    const info: ModelInfo = {
      path,
      name: `fake-${++this.models}`,
      architecture: "llama",
      size_bytes: 1,
      context_size: 64,
      train_context_size: 64,
      threads: 1,
      gpu: false,
      gpu_layers: 0,
      engine_build: "fake",
      parallel: 1,
    };
    this.pendingInfo = info;
    return this.loading.promise;
  }
  private pendingInfo: ModelInfo | null = null;

  passValidation(): void {
    this.validation?.resolve(fakePlan(this.validatedPath, this.modelBytes));
    this.validation = null;
  }
  failValidation(code: ErrorCode = "MODEL_INVALID"): void {
    this.validation?.reject(new KekahydeError(code, "fake validation failure"));
    this.validation = null;
  }
  finishLoad(): void {
    const engine = this;
    const info = this.pendingInfo!;
    const model: LoadedModel = {
      info,
      generate(options: GenerateOptions) {
        const d = deferred<GenerateResult>();
        // An abort is only noticed when the test lets the generation end, as a real engine ends after a token.
        engine.generations.push({ ...d, signal: options.signal });
        return d.promise;
      },
      async dispose() {
        engine.disposedModels += 1;
      },
      lost: new Promise(() => {}),
    };
    this.loading?.resolve(model);
    this.loading = null;
  }
  failLoad(): void {
    this.loading?.reject(new KekahydeError("MODEL_INVALID", "fake load failure"));
    this.loading = null;
  }
  finishGeneration(): void {
    const generation = this.generations.shift();
    const cancelled = generation?.signal.aborted;
    generation?.resolve({
      text: cancelled ? "partial" : "done",
      finishReason: cancelled ? "cancelled" : "stop",
      promptTokens: 1,
      completionTokens: 1,
      durationMs: 1,
      firstTokenMs: 1,
    });
  }
  failGeneration(code: ErrorCode): void {
    this.generations.shift()?.reject(new KekahydeError(code, `fake ${code}`));
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
    trainContextSize: 64,
    contextSize: 64,
    sequences: 1,
    bytes,
    weightsBytes: bytes,
    kvCacheBytes: 0,
    freeBytes: 1e12,
    onGpu: false,
  };
}

/** Lets promise callbacks and actor events settle. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}
