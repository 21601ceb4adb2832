import { basename } from "node:path";
import { getLlama, LlamaCompletion, LlamaLogLevel, type Llama, type LlamaContext, type LlamaModel } from "node-llama-cpp";
import { KekahydeError, toKekahydeError } from "../errors.ts";
import { inspectModelFile } from "./modelFile.ts";
import type { Engine, FinishReason, GenerateOptions, GenerateResult, LoadedModel, LoadOptions, ModelInfo } from "./types.ts";

export type GpuMode = "auto" | "off";

export interface LlamaEngineOptions {
  gpu: GpuMode;
  threads: number;
  /** Context size for each loaded model; bounded by the model's trained context length. */
  contextSize: number;
  /** Receives llama.cpp's own log lines (warnings and errors). */
  onNativeLog?: (level: string, message: string) => void;
}

const STOP_REASONS: Record<string, FinishReason> = {
  eogToken: "stop",
  stopGenerationTrigger: "stop",
  customStopTrigger: "stop",
  maxTokens: "length",
  abort: "cancelled",
};

class LlamaLoadedModel implements LoadedModel {
  private readonly completion: LlamaCompletion;
  private inflight: { abort: AbortController; done: Promise<unknown> } | null = null;
  private disposing: Promise<void> | null = null;

  constructor(
    readonly info: ModelInfo,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
  ) {
    this.completion = new LlamaCompletion({ contextSequence: context.getSequence() });
  }

  generate(options: GenerateOptions): Promise<GenerateResult> {
    if (this.disposing) return Promise.reject(new KekahydeError("NO_MODEL", "The model has been unloaded."));
    // Our own controller, so that dispose() can end a generation it did not start.
    const abort = new AbortController();
    const forward = () => abort.abort();
    options.signal.addEventListener("abort", forward, { once: true });
    if (options.signal.aborted) abort.abort();
    const done = this.run({ ...options, signal: abort.signal }).finally(() => {
      options.signal.removeEventListener("abort", forward);
      this.inflight = null;
    });
    this.inflight = { abort, done: done.catch(() => {}) };
    return done;
  }

  private async run({ prompt, maxTokens, signal, onText }: GenerateOptions): Promise<GenerateResult> {
    const promptTokens = this.model.tokenize(prompt).length + (this.model.tokens.bos != null ? 1 : 0);
    const contextSize = this.context.contextSize;
    if (promptTokens >= contextSize) {
      throw new KekahydeError(
        "PROMPT_TOO_LONG",
        `The prompt is ${promptTokens} tokens but the context holds ${contextSize}. Shorten the prompt or load the model with a larger context.`,
        { prompt_tokens: promptTokens, context_size: contextSize },
      );
    }
    const room = contextSize - promptTokens;
    const limit = maxTokens === undefined ? room : Math.min(maxTokens, room);
    let completionTokens = 0;
    try {
      const { response, metadata } = await this.completion.generateCompletionWithMeta(prompt, {
        maxTokens: limit,
        signal,
        stopOnAbortSignal: true,
        onToken: (tokens) => void (completionTokens += tokens.length),
        onTextChunk: onText,
      });
      let finishReason = STOP_REASONS[metadata.stopReason] ?? "stop";
      if (signal.aborted) finishReason = "cancelled";
      return { text: response, finishReason, promptTokens, completionTokens };
    } catch (e) {
      if (signal.aborted) return { text: "", finishReason: "cancelled", promptTokens, completionTokens };
      throw toKekahydeError(e, "ENGINE_FAILURE", "generation failed in the engine");
    }
  }

  /** Idempotent; ends a running generation first, because freeing a context under it would crash llama.cpp. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      if (this.inflight) {
        this.inflight.abort.abort();
        await this.inflight.done;
      }
      this.completion.dispose();
      await this.context.dispose();
      await this.model.dispose();
    })();
    return this.disposing;
  }
}

/** The node-llama-cpp engine: prebuilt binaries only; it never downloads or compiles anything at run time. */
export function createLlamaEngine(options: LlamaEngineOptions): Engine {
  let llama: Promise<Llama> | null = null;
  const library = (): Promise<Llama> =>
    (llama ??= getLlama({
      gpu: options.gpu === "off" ? false : "auto",
      build: "never",
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => options.onNativeLog?.(String(level), message.trim()),
    }).catch((e) => {
      llama = null;
      throw toKekahydeError(e, "ENGINE_FAILURE", "could not start the llama.cpp engine");
    }));

  return {
    async validate(path) {
      await inspectModelFile(path);
    },

    async load({ path: rawPath, signal, onProgress }: LoadOptions): Promise<LoadedModel> {
      const { path, gguf } = await inspectModelFile(rawPath);
      const lib = await library();
      let model: LlamaModel;
      try {
        model = await lib.loadModel({ modelPath: path, loadSignal: signal, onLoadProgress: onProgress });
      } catch (e) {
        if (signal.aborted) throw new KekahydeError("MODEL_INVALID", `loading ${path} was cancelled`, { path });
        throw toKekahydeError(e, "MODEL_INVALID", `${path} could not be loaded by llama.cpp`);
      }
      const trainContext = model.trainContextSize;
      const contextSize = Math.max(16, Math.min(options.contextSize, trainContext || options.contextSize));
      let context: LlamaContext;
      try {
        context = await model.createContext({ contextSize, sequences: 1, threads: { ideal: options.threads, min: options.threads } });
      } catch (e) {
        await model.dispose();
        throw toKekahydeError(e, "MODEL_INVALID", `could not create a ${contextSize}-token context for ${path}`);
      }
      const info: ModelInfo = {
        path,
        name: gguf.name ?? basename(path).replace(/\.gguf$/i, ""),
        architecture: gguf.architecture,
        size_bytes: gguf.fileSize,
        context_size: context.contextSize,
        train_context_size: gguf.contextLength,
        threads: options.threads,
      };
      return new LlamaLoadedModel(info, model, context);
    },

    async dispose() {
      if (!llama) return;
      const lib = await llama.catch(() => null);
      llama = null;
      await lib?.dispose();
    },
  };
}
