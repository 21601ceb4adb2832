import type { ChatMessage, GenerationRequest, SamplingOptions } from "../../domain/generation.ts";
import { checkJsonSchema } from "../jsonSchema.ts";
import { bad, optionalBoolean, optionalNumber } from "../validation.ts";

/**
 * OpenAI request bodies to our generation requests. Fields OpenAI defines but a local engine cannot honour
 * (n > 1, logprobs, tools) are refused with 400 rather than silently ignored.
 */

type Body = Record<string, unknown>;

function sampling(body: Body): SamplingOptions {
  const s: SamplingOptions = {
    temperature: optionalNumber(body, "temperature", { min: 0, max: 2 }),
    topP: optionalNumber(body, "top_p", { min: 0, max: 1 }),
    seed: optionalNumber(body, "seed", { min: 0, max: 0xffffffff, integer: true }),
  };
  const penalty = optionalNumber(body, "frequency_penalty", { min: -2, max: 2 });
  if (penalty !== undefined && penalty !== 0) s.repeatPenalty = 1 + Math.max(0, penalty) / 2;
  for (const k of Object.keys(s) as Array<keyof SamplingOptions>) if (s[k] === undefined) delete s[k];
  return s;
}

function stopList(body: Body): string[] | undefined {
  const stop = body.stop;
  if (stop === undefined || stop === null) return undefined;
  const list = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0)) bad("stop", "must be a string or an array of up to 4 strings");
  return list as string[];
}

function refuseUnsupported(body: Body): void {
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) bad("n", "must be 1: Kekahyde generates one choice per request");
  for (const field of ["logprobs", "tools", "functions"]) {
    const v = body[field];
    if (v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0)) bad(field, "is not supported by Kekahyde");
  }
}

export interface OpenAiRequest extends GenerationRequest {
  stream: boolean;
  model: string | null;
}

const modelName = (body: Body): string | null => (typeof body.model === "string" ? body.model : null);

export function parseCompletion(body: Body): OpenAiRequest {
  refuseUnsupported(body);
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1) prompt = prompt[0];
  if (typeof prompt !== "string" || prompt.length === 0) bad("prompt", "must be a non-empty string");
  return {
    prompt,
    raw: true,
    // OpenAI's default for completions is 16 tokens.
    maxTokens: optionalNumber(body, "max_tokens", { min: 1, max: 1 << 24, integer: true }) ?? 16,
    stop: stopList(body),
    sampling: sampling(body),
    stream: optionalBoolean(body, "stream") ?? false,
    model: modelName(body),
  };
}

function messageText(content: unknown, i: number): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content) && content.every((p) => typeof p === "object" && p !== null && (p as Body).type === "text" && typeof (p as Body).text === "string")) {
    return content.map((p) => (p as { text: string }).text).join("");
  }
  bad(`messages[${i}].content`, "must be a string or an array of text parts");
}

function responseFormat(body: Body): Record<string, unknown> | undefined {
  const rf = body.response_format as Body | undefined;
  if (rf === undefined || rf === null) return undefined;
  if (typeof rf !== "object") bad("response_format", "must be an object");
  if (rf.type === "text") return undefined;
  if (rf.type === "json_object") return { type: "object", additionalProperties: true };
  if (rf.type === "json_schema") {
    const js = rf.json_schema as Body | undefined;
    if (!js || typeof js !== "object" || typeof js.schema !== "object" || js.schema === null) bad("response_format", "json_schema needs a \"schema\" object");
    return checkJsonSchema(js.schema, "response_format");
  }
  bad("response_format", 'type must be "text", "json_object" or "json_schema"');
}

export function parseChatCompletion(body: Body): OpenAiRequest {
  refuseUnsupported(body);
  const raw = body.messages;
  if (!Array.isArray(raw) || raw.length === 0) bad("messages", "must be a non-empty array of {role, content}");
  const messages: ChatMessage[] = raw.map((m, i) => {
    if (typeof m !== "object" || m === null) bad(`messages[${i}]`, "must be an object");
    let role = (m as Body).role;
    if (role === "developer") role = "system";
    if (role !== "system" && role !== "user" && role !== "assistant") bad(`messages[${i}].role`, 'must be "system", "user" or "assistant"');
    return { role, content: messageText((m as Body).content, i) };
  });
  if (messages.at(-1)!.role !== "user") bad("messages", "must end with a user message");
  return {
    prompt: messages.at(-1)!.content,
    messages,
    raw: false,
    maxTokens: optionalNumber(body, "max_completion_tokens", { min: 1, max: 1 << 24, integer: true }) ?? optionalNumber(body, "max_tokens", { min: 1, max: 1 << 24, integer: true }),
    stop: stopList(body),
    jsonSchema: responseFormat(body),
    sampling: sampling(body),
    stream: optionalBoolean(body, "stream") ?? false,
    model: modelName(body),
  };
}
