import type { GenerationRequest, SamplingOptions, ToolChoice, ToolDefinition } from "../../domain/generation.ts";
import { checkJsonSchema } from "../jsonSchema.ts";
import { pairToolCalls, parseTools, refuseDeepArguments, type RequestedCall, type UnpairedMessage } from "../tools.ts";
import { bad, optionalBoolean, optionalNumber } from "../validation.ts";

/** Chat: `logprobs: true` and `top_logprobs` (0-20, only with logprobs), as OpenAI checks them. */
function chatLogprobs(body: Record<string, unknown>): Pick<GenerationRequest, "logprobs"> {
  const wanted = optionalBoolean(body, "logprobs") ?? false;
  const top = optionalNumber(body, "top_logprobs", { min: 0, max: 20, integer: true });
  if (top !== undefined && !wanted) bad("top_logprobs", 'needs "logprobs": true');
  return wanted ? { logprobs: { top: top ?? 0 } } : {};
}

/** Completions: `logprobs` is the number of most likely tokens to list at each step (0-5). */
function completionLogprobs(body: Record<string, unknown>): Pick<GenerationRequest, "logprobs"> {
  const top = optionalNumber(body, "logprobs", { min: 0, max: 5, integer: true });
  return top === undefined ? {} : { logprobs: { top } };
}

/**
 * OpenAI request bodies to our generation requests. Fields OpenAI defines but a local engine cannot honour
 * (n > 1, the legacy functions) are refused with 400 rather than silently ignored.
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

const given = (v: unknown) => v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0);

function refuseUnsupported(body: Body): void {
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1) bad("n", "must be 1: Kekahyde generates one choice per request");
  for (const field of ["functions", "function_call"]) if (given(body[field])) bad(field, 'is not supported: use "tools" and "tool_choice" (OpenAI\'s deprecated functions are not)');
}

export interface OpenAiRequest extends GenerationRequest {
  stream: boolean;
  model: string | null;
}

const modelName = (body: Body): string | null => (typeof body.model === "string" ? body.model : null);

export function parseCompletion(body: Body): OpenAiRequest {
  refuseUnsupported(body);
  if (given(body.tools)) bad("tools", "are for chat: send them to /v1/chat/completions");
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
    ...completionLogprobs(body),
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

/** A text message's content: a string, or text parts; `null` (an assistant message with tool calls) is "". */
function contentText(content: unknown, i: number, nullable: boolean): string {
  if (nullable && (content === null || content === undefined)) return "";
  return messageText(content, i);
}

function toolCallsOf(m: Body, i: number): RequestedCall[] {
  const calls = m.tool_calls;
  if (calls === undefined || calls === null) return [];
  if (!Array.isArray(calls)) bad(`messages[${i}].tool_calls`, 'must be an array of {"id", "type": "function", "function": {"name", "arguments"}}');
  return calls.map((c, k) => {
    const field = `messages[${i}].tool_calls[${k}]`;
    const call = c as Body;
    const fn = call?.function as Body | undefined;
    if (typeof c !== "object" || c === null || typeof fn !== "object" || fn === null || typeof fn.name !== "string" || fn.name === "") {
      bad(field, 'must be {"id", "type": "function", "function": {"name", "arguments"}}');
    }
    if (typeof call.id !== "string" || call.id === "") bad(`${field}.id`, "must be the call's id (a non-empty string), as the tool message's tool_call_id names it");
    const args = fn.arguments;
    // OpenAI sends the arguments as JSON text; an object is taken as it is.
    const text = typeof args === "string" ? args : args === undefined || args === null ? "" : typeof args === "object" ? JSON.stringify(args) : bad(`${field}.function.arguments`, "must be a string of JSON");
    refuseDeepArguments(text, `${field}.function.arguments`);
    return { id: call.id, name: fn.name, arguments: text };
  });
}

const ROLES = '"system", "developer", "user", "assistant" or "tool"';

function chatMessage(m: unknown, i: number): UnpairedMessage {
  if (typeof m !== "object" || m === null) bad(`messages[${i}]`, "must be an object");
  const message = m as Body;
  let role = message.role;
  if (role === "developer") role = "system";
  if (role === "function") bad(`messages[${i}].role`, 'must be one of ' + ROLES + ': the deprecated "function" role is not supported, use "tool" messages');
  if (role === "system" || role === "user") return { role, content: messageText(message.content, i) };
  if (role === "assistant") {
    if (given(message.function_call)) bad(`messages[${i}].function_call`, 'is not supported: use "tool_calls"');
    const calls = toolCallsOf(message, i);
    return { role, content: contentText(message.content, i, calls.length > 0 || message.content === null), calls };
  }
  if (role === "tool") {
    const id = message.tool_call_id;
    if (typeof id !== "string" || id === "") bad(`messages[${i}].tool_call_id`, "must name the tool call this message answers");
    return { role, content: messageText(message.content, i), callId: id };
  }
  bad(`messages[${i}].role`, `must be ${ROLES}`);
}

/**
 * `tool_choice`: "none" (the tools are left out: the model writes text), "auto" (default), "required", or
 * `{"type": "function", "function": {"name"}}`.
 */
function toolChoice(body: Body, tools: ToolDefinition[] | undefined): ToolChoice | "none" {
  const choice = body.tool_choice;
  if (choice === undefined || choice === null || choice === "auto") return "auto";
  if (choice === "none") return "none";
  const needTools = () => tools ?? bad("tool_choice", 'needs "tools" to choose from');
  if (choice === "required") {
    needTools();
    return "required";
  }
  const fn = typeof choice === "object" ? ((choice as Body).function as Body | undefined) : undefined;
  if (typeof choice !== "object" || (choice as Body).type !== "function" || typeof fn?.name !== "string") {
    bad("tool_choice", 'must be "none", "auto", "required" or {"type": "function", "function": {"name"}}');
  }
  const name = fn.name;
  if (!needTools().some((t) => t.name === name)) bad("tool_choice", `names "${name}", which is not one of the tools`);
  return { name };
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
    return checkJsonSchema(js.schema, "response_format.json_schema.schema");
  }
  bad("response_format", 'type must be "text", "json_object" or "json_schema"');
}

export function parseChatCompletion(body: Body): OpenAiRequest {
  refuseUnsupported(body);
  const raw = body.messages;
  if (!Array.isArray(raw) || raw.length === 0) bad("messages", "must be a non-empty array of {role, content}");
  const messages = pairToolCalls(raw.map(chatMessage));
  const tools = parseTools(body.tools, { typeRequired: true });
  const choice = toolChoice(body, tools);
  const parallel = optionalBoolean(body, "parallel_tool_calls");
  const jsonSchema = responseFormat(body);
  const calling = tools !== undefined && choice !== "none";
  if (calling && jsonSchema) bad("response_format", 'cannot be combined with tools: leave it out, or set "tool_choice" to "none"');
  if (calling && body.logprobs === true) bad("logprobs", 'cannot be combined with tools yet: leave it out, or set "tool_choice" to "none"');
  return {
    prompt: messages.at(-1)!.content,
    messages,
    ...(calling && { tools, toolChoice: choice, ...(parallel !== undefined && { parallelToolCalls: parallel }) }),
    raw: false,
    maxTokens: optionalNumber(body, "max_completion_tokens", { min: 1, max: 1 << 24, integer: true }) ?? optionalNumber(body, "max_tokens", { min: 1, max: 1 << 24, integer: true }),
    stop: stopList(body),
    jsonSchema,
    sampling: sampling(body),
    ...chatLogprobs(body),
    ...(optionalBoolean(body, "truncate") && { truncate: true }),
    stream: optionalBoolean(body, "stream") ?? false,
    model: modelName(body),
  };
}
