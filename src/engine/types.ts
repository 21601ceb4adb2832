import type { KekahydeError } from "../errors.ts";
import type { GenerateResult, GenerationProgress, GenerationRequest } from "../domain/generation.ts";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../domain/jobs.ts";
import type { FlashAttentionMode, GpuMode, LoadSettings, ModelInfo, ModelPlan } from "../domain/models.ts";

/**
 * The engine's port: what the runtime machine needs from an inference library, and nothing more. The
 * request and model types it speaks are the domain's (src/domain/).
 */

/** How an engine runs models, whether in this process (llamaEngine.ts) or in engine processes (process/). */
export interface EngineSettings {
  gpu: GpuMode;
  threads: number;
  /** Context size for each loaded model; bounded by the model's trained context length. */
  contextSize: number;
  /** Flash attention in every context (default "auto", llama.cpp's own: node-llama-cpp's is off). */
  flashAttention?: FlashAttentionMode;
  /** Context sequences per model, for parallel generations (default 1). */
  parallel?: number;
  /** Folders models may be loaded from; empty: anywhere. */
  modelsDirs?: readonly string[];
  /** Bytes of memory available for a new model; defaults to the machine's available memory. */
  availableMemory?: () => Promise<number>;
  /** Receives llama.cpp's own log lines (warnings and errors; engine processes' stderr too). */
  onNativeLog?: (level: string, message: string) => void;
}

export interface LoadOptions {
  signal: AbortSignal;
  /** Called with 0..1 while weights are read. */
  onProgress?: (progress: number) => void;
}

export interface GenerateOptions extends GenerationRequest {
  signal: AbortSignal;
  onText?: (chunk: string) => void;
  onProgress?: (progress: GenerationProgress) => void;
}

/** Options of the jobs other than generation. */
export interface JobOptions {
  signal: AbortSignal;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  generate(options: GenerateOptions): Promise<GenerateResult>;
  /** One vector per input, as the model's pooling and metadata say (see docs/api.md for normalisation). */
  embed(request: EmbedRequest, options: JobOptions): Promise<EmbedResult>;
  /** One relevance score per document (a reranking model). */
  rank(request: RankRequest, options: JobOptions): Promise<RankResult>;
  tokenize(request: TokenizeRequest, options: JobOptions): Promise<TokenizeResult>;
  detokenize(request: DetokenizeRequest, options: JobOptions): Promise<DetokenizeResult>;
  /** Frees the model; idempotent. Ends running generations first. */
  dispose(): Promise<void>;
  /**
   * Settles if the engine behind this model ends without being asked (its process crashed or was killed),
   * with the error that says why; never for an engine that cannot end by itself.
   */
  readonly lost: Promise<KekahydeError>;
}

export interface Engine {
  /**
   * Reads and checks a model file once (allowed folder, regular file, bounded GGUF check) and says what
   * loading it will take; throws KekahydeError (MODEL_NOT_FOUND, MODEL_FORBIDDEN, MODEL_INVALID). The plan
   * is what `load` takes: the file is not inspected again.
   */
  plan(path: string, settings: LoadSettings): Promise<ModelPlan>;
  /** Loads a planned model; throws KekahydeError (MODEL_INVALID, ENGINE_FAILURE). */
  load(plan: ModelPlan, options: LoadOptions): Promise<LoadedModel>;
  /** Frees whatever the engine holds (native library, processes). */
  dispose(): Promise<void>;
}
