import type { CatalogueEntry, ModelFacts } from "../../catalogue/index.ts";
import type { FinishReason, GenerateResult, ToolCall } from "../../domain/generation.ts";
import type { ModelInfo } from "../../domain/models.ts";
import type { ModelView } from "../statusView.ts";
import { capabilitiesOf } from "../tools.ts";

/**
 * Kekahyde's models and results in Ollama's response shapes (its docs/api.md): what `/api/tags`, `/api/ps`,
 * `/api/show`, `/api/generate` and `/api/chat` answer.
 */

/**
 * The Ollama version `/api/version` reports: the oldest release whose API these routes cover as clients use
 * it. Clients gate features on it; VS Code Copilot requires at least 0.6.4.
 */
export const OLLAMA_API_VERSION = "0.6.4";

/** Names as Ollama lists them: always with a tag ("x" is "x:latest"). */
const listedName = (name: string): string => (name.includes(":") ? name : `${name}:latest`);

export interface OllamaDetails {
  parent_model: string;
  format: "gguf";
  family: string;
  families: string[];
  parameter_size: string;
  quantization_level: string;
}

function detailsOf(facts: ModelFacts | null, architecture = "unknown"): OllamaDetails {
  const family = facts?.architecture ?? architecture;
  return { parent_model: "", format: "gguf", family, families: [family], parameter_size: facts?.parameterSize ?? "", quantization_level: facts?.quantization ?? "" };
}

/** A digest as Ollama lists it: the hex alone; empty while Kekahyde is still computing it. */
const listedDigest = (entry: CatalogueEntry | undefined): string => entry?.digest?.replace(/^sha256:/, "") ?? "";

export function tagOf(entry: CatalogueEntry) {
  return { name: listedName(entry.name), model: listedName(entry.name), modified_at: entry.modifiedAt.toISOString(), size: entry.size, digest: listedDigest(entry), details: detailsOf(entry.facts) };
}

/** A model loaded by path from outside the models directories: what its load said of it. */
export function tagOfLoaded(name: string, info: ModelInfo) {
  return { name: listedName(name), model: listedName(name), modified_at: new Date().toISOString(), size: info.size_bytes, digest: "", details: detailsOf(null, info.architecture) };
}

/** Ollama's date for "kept loaded forever". */
const FOREVER = "2318-11-29T00:00:00Z";
const FOREVER_MS = Date.parse(FOREVER);

/**
 * When a model kept `keepAliveS` seconds from `now` expires, as `/api/ps` writes it. A keep-alive so long that
 * its date would pass Ollama's "forever" (or JavaScript's last date: an invalid Date, whose toISOString
 * throws) is written as forever: `/api/ps` must answer for any keep-alive a request could set.
 */
function expiryOf(keepAliveS: number, now: number): string {
  const at = now + keepAliveS * 1000;
  return keepAliveS < 0 || !Number.isFinite(at) || at >= FOREVER_MS ? FOREVER : new Date(at).toISOString();
}

export function runningOf(view: ModelView, entry: CatalogueEntry | undefined, now = Date.now()) {
  const onGpu = view.info !== null && view.info.gpu !== false && view.info.gpu_layers > 0;
  const size = view.engine_rss_bytes ?? view.memory_bytes;
  // expires_at is null while the model works (and when it is kept forever): then it expires keep-alive after now.
  const expires = view.expires_at ?? expiryOf(view.keep_alive_s, now);
  return {
    name: listedName(view.name),
    model: listedName(view.name),
    size,
    digest: listedDigest(entry),
    details: detailsOf(entry?.facts ?? null),
    expires_at: expires,
    size_vram: onGpu ? size : 0,
    context_length: view.context_size ?? 0,
  };
}

/**
 * `/api/show`: what Kekahyde knows of a model, in Ollama's fields. `fileFacts`: the facts of a loaded model
 * that is in no models directory, read from its file.
 */
export function showOf(name: string, entry: CatalogueEntry | undefined, info: ModelInfo | null, fileFacts: ModelFacts | null = null) {
  const facts = entry?.facts ?? fileFacts;
  const architecture = facts?.architecture ?? info?.architecture ?? "unknown";
  const path = entry?.path ?? info?.path ?? "";
  const modelInfo: Record<string, unknown> = { "general.architecture": architecture };
  if (facts) {
    modelInfo["general.parameter_count"] = facts.parameterCount;
    if (facts.name) modelInfo["general.basename"] = facts.name;
    if (facts.fileType !== null) modelInfo["general.file_type"] = facts.fileType;
    if (facts.contextLength !== null) modelInfo[`${architecture}.context_length`] = facts.contextLength;
    if (facts.embeddingLength !== null) modelInfo[`${architecture}.embedding_length`] = facts.embeddingLength;
  } else if (info?.train_context_size) {
    modelInfo[`${architecture}.context_length`] = info.train_context_size;
  }
  return {
    modelfile: `# Kekahyde serves this model from its GGUF file; it has no Modelfile.\nFROM ${path}\n`,
    parameters: "",
    template: facts?.chatTemplate ?? "",
    details: detailsOf(facts, architecture),
    model_info: modelInfo,
    // What works: generation, and tools for a template that renders them. Vision is not served, so not claimed.
    capabilities: capabilitiesOf(facts),
    modified_at: (entry?.modifiedAt ?? new Date()).toISOString(),
    name: listedName(name),
  };
}

/** The calls a model made, as Ollama's `message.tool_calls`: arguments as an object. */
export const toolCallsOf = (calls: ToolCall[]) =>
  calls.map((c, index) => ({ id: c.id, function: { index, name: c.name, arguments: JSON.parse(c.arguments) as Record<string, unknown> } }));

/** Ollama's done_reason for how a generation ended (a turn that ends in tool calls is "stop", as in Ollama). */
export const doneReason = (r: FinishReason): "stop" | "length" => (r === "length" || r === "timeout" ? "length" : "stop");

const ns = (ms: number): number => Math.round(ms * 1e6);

/**
 * Ollama's durations (nanoseconds) and counts. `load_duration` is the time the request waited before its
 * generation began: loading its model on first use, or waiting in the queue.
 */
export function timingsOf(result: GenerateResult, requestStartedMs: number, nowMs = performance.now()) {
  const total = Math.max(0, nowMs - requestStartedMs);
  const prompt = result.firstTokenMs ?? 0;
  return {
    total_duration: ns(total),
    load_duration: ns(Math.max(0, total - result.durationMs)),
    // As Ollama counts it: the prompt tokens evaluated, not those found in the prompt cache.
    prompt_eval_count: result.promptTokens - (result.cachedTokens ?? 0),
    prompt_eval_duration: ns(prompt),
    eval_count: result.completionTokens,
    eval_duration: ns(Math.max(0, result.durationMs - prompt)),
  };
}
