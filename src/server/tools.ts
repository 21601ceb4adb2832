import type { ModelFacts } from "../catalogue/index.ts";
import type { ChatMessage, ToolCall, ToolDefinition } from "../domain/generation.ts";
import { checkJsonSchema, checkSchemaNesting, SCHEMA_LIMITS, STRING_FORMATS, UPPER_BOUND_KEYWORDS } from "./jsonSchema.ts";
import { MAX_JSON_DEPTH, textNestsDeeperThan } from "./middleware/jsonBody.ts";
import { bad } from "./validation.ts";

/**
 * Tools in requests, for OpenAI's and Ollama's chat routes alike: the definitions a model may call, and the
 * conversation's tool calls paired with the "tool" messages that answer them. The engine renders both with
 * the model's own chat template (src/engine/llamaEngine.ts).
 */

type Body = Record<string, unknown>;

const MAX_TOOLS = 128;
/** OpenAI's rule for function names, with "." and ":" as some clients use them; never spaces. */
const TOOL_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

const isObject = (v: unknown): v is Body => typeof v === "object" && v !== null && !Array.isArray(v);

const JSON_TYPE: Record<string, (v: unknown) => boolean> = {
  string: (v) => typeof v === "string",
  number: (v) => typeof v === "number",
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
};

/**
 * Tool schemas as clients write them, in the subset's terms: `{"type": "string", "enum": [...]}` (OpenAI's own
 * examples) is the enum alone when every value has that type, and likewise with `const`. Returns a copy.
 */
function normalizedSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(normalizedSchema);
  if (!isObject(node)) return node;
  const out: Body = {};
  for (const [k, v] of Object.entries(node)) out[k] = k === "enum" || k === "const" || k === "default" || k === "examples" ? v : normalizedSchema(v);
  const values = Array.isArray(out.enum) ? out.enum : "const" in out ? [out.const] : null;
  const types = typeof out.type === "string" ? [out.type] : Array.isArray(out.type) ? out.type : null;
  if (values && types && types.every((t) => typeof t === "string" && t in JSON_TYPE) && values.every((v) => types.some((t) => JSON_TYPE[t as string](v)))) delete out.type;
  return out;
}

/**
 * Keywords of agents' tool schemas (MCP servers, IDE agents) that only narrow values in ways a grammar cannot
 * enforce: bounds, patterns, formats other than dates and times, and conditionals. Dropped from tool schemas
 * (not from `response_format`, where a client asks for exactly that shape), so such tools are accepted as
 * llama-server and Ollama accept them; a call's arguments then hold to everything else in the schema.
 */
const UNENFORCEABLE = new Set([
  "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "pattern", "uniqueItems",
  "contains", "minContains", "maxContains", "propertyNames", "dependentRequired", "dependentSchemas",
  "dependencies", "not", "if", "then", "else", "readOnly", "writeOnly", "deprecated", "contentEncoding",
  "contentMediaType",
]);

/**
 * Whether a keyword only narrows values in a way the grammar cannot enforce: one of UNENFORCEABLE, a format
 * other than dates and times, or an upper bound past what a grammar can hold (agents' schemas carry
 * `maxLength: 10000` and the like; a lower bound that large would make every call longer than that, and is
 * refused).
 */
function unenforceable(keyword: string, value: unknown): boolean {
  if (UNENFORCEABLE.has(keyword)) return true;
  if (keyword === "format") return typeof value === "string" && !STRING_FORMATS.has(value);
  return UPPER_BOUND_KEYWORDS.has(keyword) && typeof value === "number" && value > SCHEMA_LIMITS.repetitions;
}

/** A tool schema without its unenforceable keywords, walking only where schemas are (not property names). */
function enforceableSchema(node: unknown): unknown {
  if (!isObject(node)) return node;
  const out: Body = {};
  for (const [k, v] of Object.entries(node)) {
    if (unenforceable(k, v)) continue;
    if ((k === "properties" || k === "$defs") && isObject(v)) out[k] = Object.fromEntries(Object.entries(v).map(([name, sub]) => [name, enforceableSchema(sub)]));
    else if (k === "items" || k === "additionalProperties") out[k] = enforceableSchema(v);
    else if ((k === "prefixItems" || k === "anyOf" || k === "oneOf") && Array.isArray(v)) out[k] = v.map(enforceableSchema);
    else out[k] = v;
  }
  return out;
}

/**
 * `tools`: `[{"type": "function", "function": {"name", "description"?, "parameters"?}}]`. The parameters must
 * be an object schema in the subset a grammar can enforce (src/server/jsonSchema.ts), so that the arguments of
 * every call are valid against it; `{}` or none means the function takes no arguments. Returns undefined for
 * no tools.
 */
export function parseTools(raw: unknown, options: { typeRequired: boolean }): ToolDefinition[] | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!Array.isArray(raw) || raw.length > MAX_TOOLS) bad("tools", `must be an array of at most ${MAX_TOOLS} tools`);
  if (raw.length === 0) return undefined;
  const names = new Set<string>();
  return raw.map((tool, i) => {
    const field = `tools[${i}]`;
    if (!isObject(tool)) bad(field, 'must be an object: {"type": "function", "function": {"name", "description", "parameters"}}');
    if (tool.type !== "function" && (options.typeRequired || tool.type !== undefined)) bad(`${field}.type`, 'must be "function": Kekahyde calls functions only');
    const fn = tool.function;
    if (!isObject(fn)) bad(`${field}.function`, 'must be an object: {"name", "description", "parameters"}');
    const name = fn.name;
    if (typeof name !== "string" || !TOOL_NAME.test(name)) bad(`${field}.function.name`, "must be 1 to 64 letters, digits, _ . : or -");
    if (names.has(name)) bad(`${field}.function.name`, `repeats "${name}": each tool needs its own name`);
    names.add(name);
    const description = fn.description;
    if (description !== undefined && description !== null && typeof description !== "string") bad(`${field}.function.description`, "must be a string");
    const definition: ToolDefinition = { name, ...(typeof description === "string" && description !== "" && { description }) };
    const parameters = fn.parameters;
    if (parameters === undefined || parameters === null || (isObject(parameters) && Object.keys(parameters).length === 0)) return definition;
    const paramsField = `${field}.function.parameters`;
    // Before the walks below, which recurse.
    checkSchemaNesting(parameters, paramsField);
    const schema = checkJsonSchema(normalizedSchema(enforceableSchema(parameters)), paramsField);
    if (schema.type !== "object") bad(paramsField, 'must be an object schema: {"type": "object", "properties": {...}}');
    return { ...definition, parameters: schema };
  });
}

/**
 * Refuses a call's arguments nested deeper than MAX_JSON_DEPTH: the engine parses them and renders them into
 * the prompt, recursively. (An object was already held to the limit with the body; JSON text was not.)
 */
export function refuseDeepArguments(text: string, field: string): void {
  if (textNestsDeeperThan(text, MAX_JSON_DEPTH)) bad(field, `is nested deeper than ${MAX_JSON_DEPTH} levels: a request's JSON may nest at most ${MAX_JSON_DEPTH} levels`);
}

/** A message's tool calls, as the request names them (ids may be missing in Ollama's). */
export interface RequestedCall {
  id?: string;
  name: string;
  arguments: string;
}

/** A message of the conversation before pairing: a tool message may name its call by id or by name. */
export type UnpairedMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content: string; calls: RequestedCall[] }
  | { role: "tool"; content: string; callId?: string; toolName?: string };

/**
 * Pairs every tool call with the "tool" message that answers it, as OpenAI requires: the answers follow the
 * assistant message that made the calls, before any other message, one per call. A tool message names its
 * call by `tool_call_id`; failing that (Ollama's clients) by `tool_name`, else it answers the first call not
 * yet answered. Calls get ids unique in the conversation (the engine pairs by them); any problem is a 400
 * naming the message.
 */
export function pairToolCalls(messages: readonly UnpairedMessage[]): ChatMessage[] {
  let pending: Array<ToolCall & { given?: string; answered: boolean; at: number }> = [];
  const unanswered = (at: string, what: string) => {
    const open = pending.find((c) => !c.answered);
    if (open) {
      const call = `tool call ${open.given ? `"${open.given}"` : `#${pending.indexOf(open)}`} (${open.name}) of messages[${open.at}]`;
      bad(at, `${what} the result of ${call}: every tool call needs a "tool" message with its result right after the assistant message that made it`);
    }
  };
  const out = messages.map((m, i): ChatMessage => {
    if (m.role === "tool") {
      const field = `messages[${i}]`;
      if (pending.length === 0) bad(field, 'is a "tool" message that answers no tool call: it must follow an assistant message with tool_calls');
      let call = m.callId !== undefined ? pending.find((c) => c.given === m.callId) : undefined;
      if (m.callId !== undefined && !call && pending.some((c) => c.given !== undefined)) {
        bad(`${field}.tool_call_id`, `"${m.callId}" names no tool call of messages[${pending[0].at}]`);
      }
      call ??= pending.find((c) => !c.answered && (m.toolName === undefined || c.name === m.toolName));
      if (!call) bad(field, `answers no open tool call${m.toolName !== undefined ? ` named "${m.toolName}"` : ""} of messages[${pending[0].at}]`);
      if (call.answered) bad(field, `answers tool call ${call.given ? `"${call.given}"` : call.name} a second time`);
      call.answered = true;
      return { role: "tool", content: m.content, toolCallId: call.id };
    }
    unanswered(`messages[${i}]`, "comes before");
    pending = [];
    if (m.role !== "assistant") return { role: m.role, content: m.content };
    pending = m.calls.map((c, k) => ({ id: `call_${i}_${k}`, name: c.name, arguments: c.arguments, given: c.id, answered: false, at: i }));
    const given = new Set<string>();
    for (const c of pending) {
      if (c.given === undefined) continue;
      if (given.has(c.given)) bad(`messages[${i}].tool_calls`, `repeat the id "${c.given}"`);
      given.add(c.given);
    }
    return { role: "assistant", content: m.content, ...(pending.length > 0 && { toolCalls: pending.map(({ id, name, arguments: args }) => ({ id, name, arguments: args })) }) };
  });
  unanswered("messages", "end before");
  return out;
}

/**
 * What a model can do, in Ollama's words and by Ollama's rule: "embedding" for a model whose file names a
 * pooling type (an embedding model or a reranker), else "completion"; "tools" when its chat template renders
 * tools (then Kekahyde calls them: the engine accepts tools exactly for these models).
 */
export function capabilitiesOf(facts: ModelFacts | null): string[] {
  const pooled = facts?.poolingType != null && facts.poolingType !== 0;
  return [pooled ? "embedding" : "completion", ...(facts?.templateSupportsTools ? ["tools"] : [])];
}
