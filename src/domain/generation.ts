/**
 * What a client asks of one generation and what it gets back: the types the routes, the machines and the
 * engine share. Nothing here knows HTTP, XState or llama.cpp.
 */

/** "tool_calls": the model ended its turn by calling tools (GenerateResult.toolCalls). */
export type FinishReason = "stop" | "length" | "cancelled" | "timeout" | "tool_calls";

/** Sampling settings; each left out takes the documented default (SAMPLING_DEFAULTS, docs/api.md). */
export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  seed?: number;
}

/** A function the model may call (OpenAI's and Ollama's `tools[i].function`). */
export interface ToolDefinition {
  name: string;
  description?: string;
  /**
   * JSON schema of the arguments object, checked on the request side (src/server/jsonSchema.ts); absent: the
   * function takes no arguments.
   */
  parameters?: Record<string, unknown>;
}

/** One call of a tool, made by the model or, in a conversation's history, made earlier. */
export interface ToolCall {
  /** Unique in its conversation: tool results name the call they answer by it. */
  id: string;
  name: string;
  /** The arguments as JSON text (an object), as OpenAI sends them. */
  arguments: string;
}

/**
 * Whether the model must call a tool: "auto" lets it choose, "required" makes it call one (any), `{name}` that
 * one. ("none" never reaches the engine: the request side leaves the tools out.)
 */
export type ToolChoice = "auto" | "required" | { name: string };

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  /** An assistant message's tool calls. Every one is answered by a "tool" message after it. */
  toolCalls?: ToolCall[];
  /** A "tool" message: the id of the call whose result `content` is (the request side pairs them). */
  toolCallId?: string;
}

/** What a client asks of one generation: everything but the plumbing. */
export interface GenerationRequest {
  prompt: string;
  /** true: plain completion of `prompt`; false: `prompt` as one user turn in the model's chat template. */
  raw: boolean;
  /** A system message, in chat mode. */
  system?: string;
  /**
   * A whole conversation, in chat mode, instead of `system` + `prompt` (OpenAI's chat API). It may end on any
   * role: after an assistant message the reply continues that message; after tool results the assistant's
   * turn goes on.
   */
  messages?: ChatMessage[];
  /** Functions the model may call, in chat mode; the model's chat template decides the call syntax. */
  tools?: ToolDefinition[];
  /** Default "auto". */
  toolChoice?: ToolChoice;
  /** false: at most one call per reply (default: as many as the model makes). */
  parallelToolCalls?: boolean;
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
  /** Report each sampled token's log-probability, and the `top` most likely tokens at each step (0: none). */
  logprobs?: { top: number };
  /**
   * A conversation longer than the context loses its oldest turns (system messages and the last message are
   * kept) instead of being refused; the result says how many messages were dropped.
   */
  truncate?: boolean;
}

/** One sampled token and its log-probability after the sampling options; `top`: the most likely at that step. */
export interface TokenLogprob {
  token: number;
  /** The token's text (a piece of a character when the token ends inside one). */
  text: string;
  logprob: number;
  top?: Array<{ token: number; text: string; logprob: number }>;
}

export interface GenerationProgress {
  /** The prompt's length in tokens, once the engine has counted it. */
  promptTokens?: number;
  completionTokens: number;
  /** Milliseconds from the start of the generation to its first token. */
  firstTokenMs: number | null;
}

export interface GenerateResult {
  /** The reply's text; with tool calls, what the model wrote before them. */
  text: string;
  /** The calls the model made (finish reason "tool_calls"); absent when none. */
  toolCalls?: ToolCall[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens found in the prompt cache (the sequence's earlier tokens), not evaluated again. */
  cachedTokens?: number;
  completionTokens: number;
  /** When asked for: one entry per completion token. */
  logprobs?: TokenLogprob[];
  /** Messages dropped from the start of the conversation to fit the context (`truncate`). */
  truncatedMessages?: number;
  /**
   * Speculative decoding (a model loaded with a draft model or prompt lookup, greedy request): tokens drafted
   * and checked by the model, and of those the ones that held. Absent when the generation did not speculate.
   */
  draftTokens?: number;
  acceptedDraftTokens?: number;
  /** Wall time of the generation, and the part of it before the first token (prompt processing). */
  durationMs: number;
  firstTokenMs: number | null;
}
