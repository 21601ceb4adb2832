import { DURATION_HELP, parseDuration } from "../duration.ts";
import { KekahydeError } from "../errors.ts";
import type { GenerationRequest, SamplingOptions } from "../domain/generation.ts";
import type { LoadSettings } from "../domain/models.ts";
import { checkJsonSchema } from "./jsonSchema.ts";
import type { AskedRouting } from "./routing.ts";

/**
 * Request bodies to typed requests. Each check names the field and the accepted range, so a client can fix
 * its request from the message alone. Unknown fields are ignored.
 */

type Body = Record<string, unknown>;

/** A BAD_REQUEST that names the field: `"field" message.` */
export function bad(field: string, message: string): never {
  throw new KekahydeError("BAD_REQUEST", `"${field}" ${message}.`, { field });
}

interface NumberRule {
  min: number;
  max: number;
  integer?: boolean;
  /** The lower bound itself is not allowed. */
  exclusiveMin?: boolean;
}

export function optionalNumber(body: Body, field: string, rule: NumberRule): number | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  const kind = rule.integer ? "an integer" : "a number";
  const range = rule.exclusiveMin ? `above ${rule.min} and at most ${rule.max}` : `from ${rule.min} to ${rule.max}`;
  if (typeof value !== "number" || !Number.isFinite(value)) bad(field, `must be ${kind} ${range}`);
  if (rule.integer && !Number.isInteger(value)) bad(field, `must be ${kind} ${range}`);
  if (value < rule.min || value > rule.max || (rule.exclusiveMin && value === rule.min)) bad(field, `must be ${kind} ${range}, got ${value}`);
  return value;
}

export function optionalBoolean(body: Body, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") bad(field, "must be true or false");
  return value;
}

function optionalString(body: Body, field: string): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") bad(field, "must be a string");
  return value;
}

const MAX_STOP_STRINGS = 16;
const MAX_STOP_LENGTH = 256;

function optionalStopList(body: Body, field: string): string[] | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length > MAX_STOP_STRINGS || !list.every((s) => typeof s === "string" && s.length > 0 && s.length <= MAX_STOP_LENGTH)) {
    bad(field, `must be an array of at most ${MAX_STOP_STRINGS} non-empty strings of at most ${MAX_STOP_LENGTH} characters`);
  }
  return list as string[];
}

function requiredText(body: Body, field: string, example: string): string {
  const value = body[field];
  if (typeof value !== "string" || value.trim().length === 0) {
    throw new KekahydeError("BAD_REQUEST", `Body needs "${field}": a non-empty string, e.g. ${example}.`, { field });
  }
  return value;
}

/** Names a model: what `/load_model {"name"}` accepts and `"model"` fields refer to. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/;

function optionalModelName(body: Body, field: string): string | undefined {
  const value = optionalString(body, field);
  if (value !== undefined && !MODEL_NAME.test(value)) bad(field, "must be a model name: 1 to 128 letters, digits and . _ : @ / -, starting with a letter or digit");
  return value;
}

function optionalKeepAlive(body: Body): number | undefined {
  const value = body.keep_alive;
  if (value === undefined || value === null) return undefined;
  const ms = parseDuration(value);
  if (ms === null) bad("keep_alive", `must be ${DURATION_HELP}`);
  return ms;
}

/**
 * Which model a request is for (none: the default one), and how long that model should then stay loaded; the
 * routing policies (src/server/routing.ts) turn it into where the request goes.
 */
export function parseRouting(body: Body): AskedRouting {
  const routing: AskedRouting = { model: optionalModelName(body, "model"), keepAliveMs: optionalKeepAlive(body) };
  if (routing.model === undefined) delete routing.model;
  if (routing.keepAliveMs === undefined) delete routing.keepAliveMs;
  return routing;
}

const toMs = (seconds: number | undefined) => (seconds === undefined ? undefined : seconds * 1000);

export interface RunPromptRequest extends GenerationRequest {
  stream: boolean;
  routing: AskedRouting;
}

export function parseRunPrompt(body: Body): RunPromptRequest {
  const prompt = requiredText(body, "prompt", '{"prompt": "Explain recursion"}');
  const sampling: SamplingOptions = {
    temperature: optionalNumber(body, "temperature", { min: 0, max: 5 }),
    topK: optionalNumber(body, "top_k", { min: 0, max: 1_000_000, integer: true }),
    topP: optionalNumber(body, "top_p", { min: 0, max: 1 }),
    minP: optionalNumber(body, "min_p", { min: 0, max: 1 }),
    repeatPenalty: optionalNumber(body, "repeat_penalty", { min: 0, max: 10, exclusiveMin: true }),
    seed: optionalNumber(body, "seed", { min: 0, max: 0xffffffff, integer: true }),
  };
  for (const key of Object.keys(sampling) as Array<keyof SamplingOptions>) if (sampling[key] === undefined) delete sampling[key];
  const schema = body.json_schema;
  return {
    prompt,
    raw: optionalBoolean(body, "raw") ?? false,
    system: optionalString(body, "system"),
    maxTokens: optionalNumber(body, "max_tokens", { min: 1, max: 1 << 24, integer: true }),
    stop: optionalStopList(body, "stop"),
    jsonSchema: schema === undefined || schema === null ? undefined : checkJsonSchema(schema, "json_schema"),
    sampling,
    timeLimitMs: toMs(optionalNumber(body, "timeout_s", { min: 0, max: 86_400, exclusiveMin: true })),
    stream: optionalBoolean(body, "stream") ?? false,
    routing: parseRouting(body),
  };
}

/**
 * Speculative decoding settings of a load: `"draft_model"` (a .gguf path, or a name in the models
 * directories, which the route looks up) or `"speculative": "lookup"`; `"speculative": "off"` is none.
 */
function parseSpeculative(body: Body): Pick<LoadSettings, "draftModel" | "speculative"> {
  const draftModel = optionalString(body, "draft_model");
  if (draftModel !== undefined && draftModel.trim() === "") bad("draft_model", 'must be the path of a .gguf draft model, e.g. "/abs/small.gguf", or a name in the models directories');
  const speculative = optionalString(body, "speculative");
  if (speculative !== undefined && speculative !== "lookup" && speculative !== "off") {
    bad("speculative", `must be "lookup" (draft from the prompt, no draft model) or "off"; for a draft model send "draft_model"`);
  }
  if (draftModel !== undefined && speculative === "lookup") bad("speculative", 'cannot be "lookup" with "draft_model": send one of the two');
  return { ...(draftModel !== undefined && { draftModel }), ...(speculative === "lookup" && { speculative: "lookup" as const }) };
}

/** A load by path, or by a name the catalogue knows (then `path` is missing until the route looks it up). */
export interface LoadModelRequest {
  path?: string;
  name?: string;
  settings: LoadSettings;
  keepAliveMs?: number;
}

export function parseLoadModel(body: Body): LoadModelRequest {
  const path = body.path;
  const named = body.path === undefined && typeof body.name === "string" && body.name.trim() !== "";
  if (!named && (typeof path !== "string" || path.trim() === "")) {
    throw new KekahydeError(
      "BAD_REQUEST",
      'Body needs "path": the path of a .gguf model file, e.g. {"path": "/abs/model.gguf"}, or "name": a model in the models directories, e.g. {"name": "qwen2.5-7b-q4_k_m"}.',
      { field: "path" },
    );
  }
  const settings: LoadSettings = {
    contextSize: optionalNumber(body, "context_size", { min: 16, max: 1 << 20, integer: true }),
    gpuLayers: optionalNumber(body, "gpu_layers", { min: 0, max: 100_000, integer: true }),
    threads: optionalNumber(body, "threads", { min: 1, max: 1024, integer: true }),
    ...parseSpeculative(body),
  };
  for (const key of Object.keys(settings) as Array<keyof LoadSettings>) if (settings[key] === undefined) delete settings[key];
  const request: LoadModelRequest = { path: named ? undefined : (path as string), name: optionalModelName(body, "name"), settings, keepAliveMs: optionalKeepAlive(body) };
  if (request.path === undefined) delete request.path;
  if (request.name === undefined) delete request.name;
  if (request.keepAliveMs === undefined) delete request.keepAliveMs;
  return request;
}

/** A request's id, as X-Request-Id gives it (a client's own, or the daemon's): what `/stop {"id"}` names. */
export const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function parseStop(body: Body): { all: boolean; model?: string; request?: string } {
  const model = optionalModelName(body, "model");
  const id = optionalString(body, "id");
  if (id !== undefined && !REQUEST_ID.test(id)) bad("id", "must be a request id as X-Request-Id gave it");
  return { all: optionalBoolean(body, "all") ?? false, ...(model !== undefined && { model }), ...(id !== undefined && { request: id }) };
}

export function parseUnload(body: Body): { model?: string } {
  const model = optionalModelName(body, "model");
  return model === undefined ? {} : { model };
}
