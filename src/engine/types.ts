/** The engine boundary: what the runtime machine needs from an inference library, and nothing more. */

export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  size_bytes: number;
  context_size: number;
  /** The context length the model was trained with, from its GGUF metadata. */
  train_context_size: number | null;
  threads: number;
  /** What node-llama-cpp runs on: "cuda", "vulkan", "metal", or false for CPU only. */
  gpu: string | false;
  gpu_layers: number;
  /**
   * Which llama.cpp binary runs it: node-llama-cpp's "prebuilt" one, or a "localBuild" from
   * `npm run build:engine` (OpenMP threads; see docs/performance.md).
   */
  engine_build: string;
  /** Generations that may run at once, each in its own context sequence of context_size tokens. */
  parallel: number;
}

/** Per-load settings; each left out takes the daemon's default. */
export interface LoadSettings {
  contextSize?: number;
  gpuLayers?: number;
  threads?: number;
  /** Context sequences, one per parallel generation (default 1). */
  parallel?: number;
}

/** What a load will take, known before loading: from the file's GGUF header and the machine. */
export interface ModelPlan {
  /** The real path that will be loaded. */
  path: string;
  /** Estimated memory: weights + KV cache for every sequence + working buffers. */
  bytes: number;
  /** Memory free for models now (RAM, or VRAM when layers go to a GPU), not counting loaded models. */
  freeBytes: number;
}

export interface LoadOptions extends LoadSettings {
  path: string;
  signal: AbortSignal;
  /** Called with 0..1 while weights are read. */
  onProgress?: (progress: number) => void;
}

export type FinishReason = "stop" | "length" | "cancelled" | "timeout";

/** Sampling settings; each left out takes the engine's documented default (see docs/api.md). */
export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  seed?: number;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** What a client asks of one generation: everything but the plumbing. */
export interface GenerationRequest {
  prompt: string;
  /** true: plain completion of `prompt`; false: `prompt` as one user turn in the model's chat template. */
  raw: boolean;
  /** A system message, in chat mode. */
  system?: string;
  /** A whole conversation, in chat mode, instead of `system` + `prompt` (OpenAI's chat API). */
  messages?: ChatMessage[];
  /** Upper bound on generated tokens; by default, until end of sequence or the context is full. */
  maxTokens?: number;
  /** Generation ends before any of these strings; they are not part of the text. */
  stop?: string[];
  /** Output constrained to this JSON schema (already checked with checkJsonSchema). */
  jsonSchema?: Record<string, unknown>;
  sampling: SamplingOptions;
  /** Ends the generation after this long, with finish reason "timeout". */
  timeLimitMs?: number;
}

export interface GenerationProgress {
  /** The prompt's length in tokens, once the engine has counted it. */
  promptTokens?: number;
  completionTokens: number;
  /** Milliseconds from the start of the generation to its first token. */
  firstTokenMs: number | null;
}

export interface GenerateOptions extends GenerationRequest {
  signal: AbortSignal;
  onText?: (chunk: string) => void;
  onProgress?: (progress: GenerationProgress) => void;
}

export interface GenerateResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Wall time of the generation, and the part of it before the first token (prompt processing). */
  durationMs: number;
  firstTokenMs: number | null;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  generate(options: GenerateOptions): Promise<GenerateResult>;
  dispose(): Promise<void>;
}

export interface Engine {
  /** Validates the file and loads it; throws KekahydeError (MODEL_NOT_FOUND, MODEL_INVALID, ...). */
  load(options: LoadOptions): Promise<LoadedModel>;
  /**
   * Checks that a path can be loaded without loading it (allowed folder, file, GGUF header, memory), so a
   * bad request never costs a loaded model, and says what loading it will take.
   */
  validate(path: string, settings: LoadSettings): Promise<ModelPlan>;
  /** Frees the native library. */
  dispose(): Promise<void>;
}
