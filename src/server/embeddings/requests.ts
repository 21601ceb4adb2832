import { DURATION_HELP, parseDuration } from "../../duration.ts";
import type { DetokenizeRequest, EmbedRequest, RankRequest, TokenizeRequest } from "../../domain/jobs.ts";
import type { AskedRouting } from "../routing.ts";
import { bad, optionalBoolean, optionalNumber, parseRouting } from "../validation.ts";

/**
 * Request bodies of the jobs other than generation: embeddings (OpenAI's and Ollama's), ranking
 * (llama-server's /v1/rerank) and tokens (llama-server's /tokenize, /detokenize). Each check names the field;
 * unknown fields are ignored, fields that would change the answer's meaning and are not supported are refused.
 */

type Body = Record<string, unknown>;

/** OpenAI's limit on the inputs of one request. */
const MAX_INPUTS = 2048;
/** More than any model's vector; what `dimensions` may ask before the model says what it has. */
const MAX_DIMENSIONS = 1 << 16;

/**
 * `input`: a string or an array of strings. Token ids (OpenAI accepts them) are refused: a request's tokens
 * are the model's, which a client of a local model rarely has. `allowEmpty`: Ollama's "" (no input at all).
 */
function inputs(body: Body, field: string, allowEmpty: boolean): string[] {
  const value = body[field];
  const tokenIds = "must be text: token ids are not supported (send the text they stand for)";
  if (typeof value === "string") {
    if (value === "") {
      if (allowEmpty) return [];
      bad(field, "must not be empty");
    }
    return [value];
  }
  if (!Array.isArray(value)) bad(field, "is required: a string or an array of strings");
  if (value.length === 0 && !allowEmpty) bad(field, "must not be an empty array");
  if (value.length > MAX_INPUTS) bad(field, `holds ${value.length} inputs; at most ${MAX_INPUTS} in one request`);
  value.forEach((item, i) => {
    if (typeof item === "number" || (Array.isArray(item) && item.every((t) => typeof t === "number"))) bad(field, tokenIds);
    if (typeof item !== "string") bad(`${field}[${i}]`, "must be a string");
    if (item === "") bad(`${field}[${i}]`, "must not be empty");
  });
  return value as string[];
}

function dimensions(body: Body): number | undefined {
  return optionalNumber(body, "dimensions", { min: 1, max: MAX_DIMENSIONS, integer: true });
}

const modelName = (body: Body): string | null => (typeof body.model === "string" && body.model.trim() !== "" ? body.model : null);

export interface OpenAiEmbeddingsRequest {
  /** The name asked for (OpenAI clients always send one), or null. */
  model: string | null;
  embed: EmbedRequest;
  /** `encoding_format: "base64"`: each vector as its little-endian float32 bytes, base64-encoded. */
  base64: boolean;
}

/** POST /v1/embeddings: OpenAI's body. An input longer than the model's context is refused, as OpenAI does. */
export function parseOpenAiEmbeddings(body: Body): OpenAiEmbeddingsRequest {
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") bad("encoding_format", 'must be "float" or "base64"');
  const dims = dimensions(body);
  return { model: modelName(body), embed: { inputs: inputs(body, "input", false), truncate: false, ...(dims !== undefined && { dimensions: dims }) }, base64: format === "base64" };
}

export interface OllamaEmbedRequest {
  model: string;
  embed: EmbedRequest;
  keepAliveMs?: number;
  /** `options.num_ctx`: the context size to load the model with, if this request loads it. */
  contextSize?: number;
}

function ollamaModel(body: Body): string {
  const model = modelName(body);
  if (model === null) bad("model", 'is required: the name of a model, e.g. "nomic-embed-text" (GET /api/tags lists them)');
  return model;
}

function ollamaCommon(body: Body): Pick<OllamaEmbedRequest, "keepAliveMs" | "contextSize"> {
  const out: Pick<OllamaEmbedRequest, "keepAliveMs" | "contextSize"> = {};
  if (body.keep_alive !== undefined && body.keep_alive !== null) {
    const ms = parseDuration(body.keep_alive);
    if (ms === null) bad("keep_alive", `must be ${DURATION_HELP}`);
    out.keepAliveMs = ms;
  }
  const options = body.options;
  if (options !== undefined && options !== null) {
    if (typeof options !== "object" || Array.isArray(options)) bad("options", "must be an object");
    // Only num_ctx means anything to an embedding; the other options are ignored, as Ollama ignores them.
    const contextSize = optionalNumber({ "options.num_ctx": (options as Body).num_ctx }, "options.num_ctx", { min: 16, max: 1 << 20, integer: true });
    if (contextSize !== undefined) out.contextSize = contextSize;
  }
  return out;
}

/** POST /api/embed: Ollama's body. `truncate` defaults to true, as in Ollama. */
export function parseOllamaEmbed(body: Body): OllamaEmbedRequest {
  const dims = dimensions(body);
  return {
    model: ollamaModel(body),
    embed: { inputs: inputs(body, "input", true), truncate: optionalBoolean(body, "truncate") ?? true, ...(dims !== undefined && { dimensions: dims }) },
    ...ollamaCommon(body),
  };
}

/** POST /api/embeddings: Ollama's older route, one `prompt`. */
export function parseOllamaEmbeddings(body: Body): OllamaEmbedRequest {
  const prompt = body.prompt ?? "";
  if (typeof prompt !== "string") bad("prompt", "must be a string");
  return { model: ollamaModel(body), embed: { inputs: prompt === "" ? [] : [prompt], truncate: true }, ...ollamaCommon(body) };
}

export interface RerankRequest {
  model: string | null;
  rank: RankRequest;
  /** How many of the best documents to return (default: all). */
  topN?: number;
  /** Also return each document's text (Jina's and Cohere's `return_documents`). */
  returnDocuments: boolean;
}

/** POST /v1/rerank (and /rerank, /v1/reranking): llama-server's body, which is Jina's and Cohere's. */
export function parseRerank(body: Body): RerankRequest {
  const query = body.query;
  if (typeof query !== "string") bad("query", "is required: a string, the text the documents are ranked against");
  const documents = body.documents;
  if (!Array.isArray(documents) || documents.length === 0) bad("documents", "is required: a non-empty array of strings");
  if (documents.length > MAX_INPUTS) bad("documents", `holds ${documents.length} documents; at most ${MAX_INPUTS} in one request`);
  documents.forEach((d, i) => {
    if (typeof d !== "string") bad(`documents[${i}]`, "must be a string");
  });
  const topN = optionalNumber(body, "top_n", { min: 1, max: 1 << 30, integer: true });
  return {
    model: modelName(body),
    rank: { query, documents: documents as string[] },
    ...(topN !== undefined && { topN }),
    returnDocuments: optionalBoolean(body, "return_documents") ?? false,
  };
}

/** POST /tokenize: llama-server's body, with an optional `model` (default: the default model). */
export function parseTokenize(body: Body): { routing: AskedRouting; tokenize: TokenizeRequest } {
  const content = body.content;
  if (typeof content !== "string") bad("content", "is required: the text to tokenize, a string (llama-server's mixed arrays of text and token ids are not supported)");
  return {
    routing: parseRouting(body),
    tokenize: {
      text: content,
      addSpecial: optionalBoolean(body, "add_special") ?? false,
      withPieces: optionalBoolean(body, "with_pieces") ?? false,
      parseSpecial: optionalBoolean(body, "parse_special") ?? false,
    },
  };
}

/** POST /detokenize: llama-server's body, with an optional `model`. */
export function parseDetokenize(body: Body): { routing: AskedRouting; detokenize: DetokenizeRequest } {
  const tokens = body.tokens;
  if (!Array.isArray(tokens)) bad("tokens", "is required: an array of token ids");
  tokens.forEach((t, i) => {
    if (typeof t !== "number" || !Number.isInteger(t) || t < 0) bad(`tokens[${i}]`, "must be a token id: an integer of 0 or more");
  });
  return { routing: parseRouting(body), detokenize: { tokens: tokens as number[] } };
}
