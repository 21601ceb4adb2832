import type { GenerateResult, GenerationRequest } from "./generation.ts";

/**
 * What a model can be asked to do. Every kind is a job of the model's runtime machine: it waits in the same
 * queue, takes a slot, can be stopped, and is counted in /status and /metrics.
 */

/** Vectors for texts (OpenAI's /v1/embeddings, Ollama's /api/embed). */
export interface EmbedRequest {
  inputs: string[];
  /** Cut inputs longer than the context to fit (Ollama's default), instead of refusing them. */
  truncate: boolean;
  /** Keep only the first `dimensions` values of each vector (renormalised), where the model allows. */
  dimensions?: number;
}
export interface EmbedResult {
  vectors: number[][];
  /** Tokens of all inputs together. */
  promptTokens: number;
}

/** Relevance of documents to a query (llama-server's /v1/rerank). */
export interface RankRequest {
  query: string;
  documents: string[];
}
export interface RankResult {
  /** One score per document, in the documents' order. */
  scores: number[];
  promptTokens: number;
}

export interface TokenizeRequest {
  text: string;
  /** Add the model's special tokens (BOS) as a prompt would have them. */
  addSpecial: boolean;
  /** Also return each token's text. */
  withPieces: boolean;
  /** Read special-token text ("<s>", "<|im_start|>") as those tokens; default: plain text, as prompts are read. */
  parseSpecial?: boolean;
}
export interface TokenizeResult {
  tokens: number[];
  /** Each token's text, or its bytes where they are not valid UTF-8 on their own (llama-server's form). */
  pieces?: Array<string | number[]>;
}

export interface DetokenizeRequest {
  tokens: number[];
}
export interface DetokenizeResult {
  text: string;
}

export type Work =
  | { kind: "generate"; request: GenerationRequest }
  | { kind: "embed"; request: EmbedRequest }
  | { kind: "rank"; request: RankRequest }
  | { kind: "tokenize"; request: TokenizeRequest }
  | { kind: "detokenize"; request: DetokenizeRequest };

export type WorkKind = Work["kind"];

/**
 * Whether a kind of work takes one of the model's slots (a context sequence). Tokens are looked up in the
 * vocabulary alone: they need no sequence and take microseconds, so they never wait behind a generation.
 */
export function takesSlot(kind: WorkKind): boolean {
  return kind !== "tokenize" && kind !== "detokenize";
}

/** What each kind of work answers. */
export interface WorkResults {
  generate: GenerateResult;
  embed: EmbedResult;
  rank: RankResult;
  tokenize: TokenizeResult;
  detokenize: DetokenizeResult;
}

export type JobResult = WorkResults[WorkKind];
