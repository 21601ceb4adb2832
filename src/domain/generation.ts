/**
 * What a client asks of one generation and what it gets back: the types the routes, the machines and the
 * engine share. Nothing here knows HTTP, XState or llama.cpp.
 */

export type FinishReason = "stop" | "length" | "cancelled" | "timeout";

/** Sampling settings; each left out takes the documented default (SAMPLING_DEFAULTS, docs/api.md). */
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
  /** Output constrained to this JSON schema (checked on the request side: src/server/jsonSchema.ts). */
  jsonSchema?: Record<string, unknown>;
  /** Output constrained to JSON of any shape (Ollama's `"format": "json"`). */
  json?: boolean;
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

export interface GenerateResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Wall time of the generation, and the part of it before the first token (prompt processing). */
  durationMs: number;
  firstTokenMs: number | null;
}
