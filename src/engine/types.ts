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
}

export interface LoadOptions {
  path: string;
  signal: AbortSignal;
  /** Called with 0..1 while weights are read. */
  onProgress?: (progress: number) => void;
}

export type FinishReason = "stop" | "length" | "cancelled";

export interface GenerateOptions {
  prompt: string;
  /** Upper bound on generated tokens; by default, until end of sequence or the context is full. */
  maxTokens?: number;
  signal: AbortSignal;
  onText?: (chunk: string) => void;
}

export interface GenerateResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  generate(options: GenerateOptions): Promise<GenerateResult>;
  dispose(): Promise<void>;
}

export interface Engine {
  /** Validates the file and loads it; throws KekahydeError (MODEL_NOT_FOUND, MODEL_INVALID, ...). */
  load(options: LoadOptions): Promise<LoadedModel>;
  /** Checks that a path can be loaded without loading it, so a bad request never costs the loaded model. */
  validate(path: string): Promise<void>;
  /** Frees the native library. */
  dispose(): Promise<void>;
}
