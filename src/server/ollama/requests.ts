import { DURATION_HELP, parseDuration } from "../../duration.ts";
import type { GenerationRequest, SamplingOptions } from "../../domain/generation.ts";
import { checkJsonSchema } from "../jsonSchema.ts";
import { pairToolCalls, parseTools, refuseDeepArguments, type RequestedCall, type UnpairedMessage } from "../tools.ts";
import { bad, optionalBoolean, optionalNumber } from "../validation.ts";

/**
 * Ollama's request bodies (its docs/api.md) to Kekahyde's requests. Ollama's defaults hold: `stream` is true,
 * `raw` is false (the prompt goes through the model's chat template). Options Kekahyde cannot honour are
 * ignored, as Ollama ignores options a model does not use; docs/ollama.md lists them. Fields that would
 * change the answer's meaning (images, thinking) are refused with 400 until they are supported.
 */

type Body = Record<string, unknown>;

export interface OllamaRequest {
  model: string;
  stream: boolean;
  keepAliveMs?: number;
  /** `options.num_ctx`: the context size to load the model with, if this request loads it. */
  contextSize?: number;
  /** null: no prompt or messages, which in Ollama loads the model (or with keep_alive 0 unloads it). */
  generation: GenerationRequest | null;
}

function modelField(body: Body): string {
  const model = body.model;
  if (typeof model !== "string" || model.trim() === "") bad("model", 'is required: the name of a model, e.g. "llama3.2" (GET /api/tags lists them)');
  return model;
}

function keepAlive(body: Body): number | undefined {
  if (body.keep_alive === undefined || body.keep_alive === null) return undefined;
  const ms = parseDuration(body.keep_alive);
  if (ms === null) bad("keep_alive", `must be ${DURATION_HELP}`);
  return ms;
}

/** `options`: the sampling and length settings Kekahyde honours; the rest are ignored. */
function options(body: Body): { sampling: SamplingOptions; maxTokens?: number; stop?: string[]; contextSize?: number } {
  const raw = body.options;
  if (raw === undefined || raw === null) return { sampling: {} };
  if (typeof raw !== "object" || Array.isArray(raw)) bad("options", "must be an object");
  const o = raw as Body;
  const field = (name: string) => `options.${name}`;
  const num = (name: string, rule: Parameters<typeof optionalNumber>[2]) => optionalNumber({ [field(name)]: o[name] }, field(name), rule);
  const sampling: SamplingOptions = {
    temperature: num("temperature", { min: 0, max: 5 }),
    topK: num("top_k", { min: 0, max: 1_000_000, integer: true }),
    topP: num("top_p", { min: 0, max: 1 }),
    minP: num("min_p", { min: 0, max: 1 }),
    repeatPenalty: num("repeat_penalty", { min: 0, max: 10, exclusiveMin: true }),
    seed: num("seed", { min: -1, max: 0xffffffff, integer: true }),
  };
  // Ollama: a seed of -1 means a random one.
  if (sampling.seed === -1) delete sampling.seed;
  for (const k of Object.keys(sampling) as Array<keyof SamplingOptions>) if (sampling[k] === undefined) delete sampling[k];
  // num_predict: -1 generates until the end of sequence, -2 until the context is full: both are our default.
  const predict = num("num_predict", { min: -2, max: 1 << 24, integer: true });
  if (predict === 0) bad(field("num_predict"), "must be a positive number of tokens, or -1 (no limit)");
  let stop: string[] | undefined;
  if (o.stop !== undefined && o.stop !== null) {
    const list = typeof o.stop === "string" ? [o.stop] : o.stop;
    if (!Array.isArray(list) || list.length > 16 || !list.every((s) => typeof s === "string" && s.length > 0 && s.length <= 256)) bad(field("stop"), "must be an array of at most 16 non-empty strings");
    stop = list as string[];
  }
  const contextSize = num("num_ctx", { min: 16, max: 1 << 20, integer: true });
  return { sampling, ...(predict !== undefined && predict > 0 && { maxTokens: predict }), ...(stop && { stop }), ...(contextSize !== undefined && { contextSize }) };
}

/** `format`: "json" for any JSON, or a JSON schema the output must follow. */
function format(body: Body): Pick<GenerationRequest, "json" | "jsonSchema"> {
  const f = body.format;
  if (f === undefined || f === null || f === "") return {};
  if (f === "json") return { json: true };
  if (typeof f === "object" && !Array.isArray(f)) return { jsonSchema: checkJsonSchema(f, "format") };
  bad("format", 'must be "json" or a JSON schema object');
}

function refuseUnsupported(body: Body): void {
  if (Array.isArray(body.images) && body.images.length > 0) bad("images", "are not supported: Kekahyde runs text models only");
  if (body.think === true || typeof body.think === "string") bad("think", "is not supported by this model (Kekahyde has no thinking mode yet); leave it out or set it to false");
  if (typeof body.suffix === "string" && body.suffix !== "") bad("suffix", "is not supported (no fill-in-the-middle yet)");
  if (typeof body.template === "string" && body.template !== "") bad("template", "is not supported: Kekahyde applies the model's own chat template (or none with \"raw\": true)");
  if (Array.isArray(body.context) && body.context.length > 0) bad("context", "is not supported: send the conversation as /api/chat messages instead");
}

/** `logprobs: true` and `top_logprobs` (0-20), as Ollama takes them beside the options. */
function logprobs(body: Body): Pick<GenerationRequest, "logprobs"> {
  const wanted = optionalBoolean(body, "logprobs") ?? false;
  const top = optionalNumber(body, "top_logprobs", { min: 0, max: 20, integer: true });
  if (top !== undefined && top > 0 && !wanted) bad("top_logprobs", 'needs "logprobs": true');
  return wanted ? { logprobs: { top: top ?? 0 } } : {};
}

export function parseGenerate(body: Body): OllamaRequest {
  refuseUnsupported(body);
  const model = modelField(body);
  const { sampling, maxTokens, stop, contextSize } = options(body);
  const prompt = body.prompt;
  if (prompt !== undefined && prompt !== null && typeof prompt !== "string") bad("prompt", "must be a string");
  const system = body.system;
  if (system !== undefined && system !== null && typeof system !== "string") bad("system", "must be a string");
  const base = { model, stream: optionalBoolean(body, "stream") ?? true, keepAliveMs: keepAlive(body), ...(contextSize !== undefined && { contextSize }) };
  if (typeof prompt !== "string" || prompt === "") return { ...base, generation: null };
  return {
    ...base,
    generation: {
      prompt,
      raw: optionalBoolean(body, "raw") ?? false,
      ...(typeof system === "string" && system !== "" && { system }),
      sampling,
      ...(maxTokens !== undefined && { maxTokens }),
      ...(stop && { stop }),
      ...format(body),
      ...logprobs(body),
    },
  };
}

/** An assistant message's `tool_calls`: `[{"function": {"name", "arguments": {...}}}]`, an `id` if the client kept one. */
function toolCallsOf(calls: unknown, i: number): RequestedCall[] {
  if (calls === undefined || calls === null) return [];
  if (!Array.isArray(calls)) bad(`messages[${i}].tool_calls`, 'must be an array of {"function": {"name", "arguments"}}');
  return calls.map((c, k) => {
    const field = `messages[${i}].tool_calls[${k}]`;
    const fn = (c as Body | null)?.function as Body | undefined;
    if (typeof fn !== "object" || fn === null || typeof fn.name !== "string" || fn.name === "") bad(field, 'must be {"function": {"name", "arguments"}}');
    const args = fn.arguments;
    if (args !== undefined && args !== null && typeof args !== "object" && typeof args !== "string") bad(`${field}.function.arguments`, "must be an object");
    const id = (c as Body).id;
    const text = typeof args === "string" ? args : JSON.stringify(args ?? {});
    refuseDeepArguments(text, `${field}.function.arguments`);
    return { ...(typeof id === "string" && id !== "" && { id }), name: fn.name, arguments: text };
  });
}

function chatMessage(m: unknown, i: number): UnpairedMessage {
  if (typeof m !== "object" || m === null) bad(`messages[${i}]`, "must be an object with role and content");
  const { role, content, images, tool_calls, tool_name, tool_call_id } = m as Body;
  if (role !== "system" && role !== "user" && role !== "assistant" && role !== "tool") bad(`messages[${i}].role`, 'must be "system", "user", "assistant" or "tool"');
  if (Array.isArray(images) && images.length > 0) bad(`messages[${i}].images`, "are not supported: Kekahyde runs text models only");
  const calls = role === "assistant" ? toolCallsOf(tool_calls, i) : [];
  if (!(typeof content === "string" || ((content === undefined || content === null) && calls.length > 0))) bad(`messages[${i}].content`, "must be a string");
  const text = typeof content === "string" ? content : "";
  if (role === "assistant") return { role, content: text, calls };
  if (role === "tool") {
    return { role, content: text, ...(typeof tool_call_id === "string" && tool_call_id !== "" && { callId: tool_call_id }), ...(typeof tool_name === "string" && tool_name !== "" && { toolName: tool_name }) };
  }
  return { role, content: text };
}

export function parseChat(body: Body): OllamaRequest {
  refuseUnsupported(body);
  const model = modelField(body);
  const { sampling, maxTokens, stop, contextSize } = options(body);
  const base = { model, stream: optionalBoolean(body, "stream") ?? true, keepAliveMs: keepAlive(body), ...(contextSize !== undefined && { contextSize }) };
  const tools = parseTools(body.tools, { typeRequired: false });
  const raw = body.messages;
  if (raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) return { ...base, generation: null };
  if (!Array.isArray(raw) || raw.length > 1000) bad("messages", "must be an array of at most 1000 messages");
  // Tool results name their call by tool_call_id, else by tool_name, else answer the calls in order.
  const messages = pairToolCalls(raw.map(chatMessage));
  const constraint = format(body);
  if (tools && (constraint.json || constraint.jsonSchema)) bad("format", "cannot be combined with tools: leave one out");
  if (tools && body.logprobs === true) bad("logprobs", "cannot be combined with tools yet: leave one out");
  return {
    ...base,
    generation: {
      prompt: messages.at(-1)!.content,
      raw: false,
      messages,
      ...(tools && { tools }),
      sampling,
      ...(maxTokens !== undefined && { maxTokens }),
      ...(stop && { stop }),
      ...constraint,
      ...logprobs(body),
      // A conversation longer than the context loses its oldest turns instead of being refused.
      ...(optionalBoolean(body, "truncate") && { truncate: true }),
    },
  };
}

export function parseShow(body: Body): { model: string } {
  const name = typeof body.model === "string" && body.model !== "" ? body.model : body.name;
  if (typeof name !== "string" || name.trim() === "") bad("model", 'is required: the name of a model, e.g. "llama3.2"');
  return { model: name };
}
