import { KekahydeError } from "../errors.ts";

/**
 * Checks that a JSON schema stays inside the subset node-llama-cpp can turn into a grammar (its
 * GbnfJsonSchema type). node-llama-cpp itself accepts anything at run time — `{"type": "foo"}` compiles to a
 * grammar of its own invention — so without this check an unsupported schema would silently constrain
 * nothing, or the wrong thing.
 */

const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const ANNOTATIONS = new Set(["description", "title", "$schema", "$id", "default", "examples", "$comment"]);
const KEYWORDS_BY_TYPE: Record<string, Set<string>> = {
  string: new Set(["type", "minLength", "maxLength", "format"]),
  number: new Set(["type"]),
  integer: new Set(["type"]),
  boolean: new Set(["type"]),
  null: new Set(["type"]),
  object: new Set(["type", "properties", "required", "additionalProperties", "minProperties", "maxProperties", "$defs"]),
  array: new Set(["type", "items", "prefixItems", "minItems", "maxItems", "$defs"]),
};
/** The string formats node-llama-cpp's grammar can enforce. */
export const STRING_FORMATS: ReadonlySet<string> = new Set(["date-time", "time", "date"]);
const MAX_DEPTH = 32;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isScalar = (v: unknown) => v === null || ["string", "number", "boolean"].includes(typeof v);

/** Thrown inside the walk; turned into a BAD_REQUEST naming the caller's field by checkJsonSchema. */
class SchemaProblem extends Error {}

function fail(path: string, reason: string): never {
  throw new SchemaProblem(`${reason} at ${path}`);
}

function checkCount(node: Record<string, unknown>, key: string, path: string): void {
  const v = node[key];
  if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < 0)) fail(`${path}/${key}`, `${key} must be a non-negative integer`);
}

function check(node: unknown, path: string, defs: Set<string>, depth: number): void {
  if (depth > MAX_DEPTH) fail(path, `schemas may nest at most ${MAX_DEPTH} levels`);
  if (!isObject(node)) fail(path, "a schema must be an object");
  const keys = Object.keys(node).filter((k) => !ANNOTATIONS.has(k));
  const localDefs = new Set(defs);
  if (node.$defs !== undefined) {
    if (!isObject(node.$defs)) fail(`${path}/$defs`, "$defs must be an object");
    for (const name of Object.keys(node.$defs)) localDefs.add(name);
    for (const [name, def] of Object.entries(node.$defs)) check(def, `${path}/$defs/${name}`, localDefs, depth + 1);
  }
  const only = (allowed: string[]) => {
    for (const k of keys) if (!allowed.includes(k) && k !== "$defs") fail(`${path}/${k}`, `keyword "${k}" cannot be combined here`);
  };

  if ("$ref" in node) {
    only(["$ref"]);
    const ref = node.$ref;
    const name = typeof ref === "string" && ref.startsWith("#/$defs/") ? ref.slice("#/$defs/".length) : null;
    if (name === null || !localDefs.has(name)) fail(`${path}/$ref`, `only "#/$defs/<name>" references to defined names are supported`);
    return;
  }
  if ("const" in node) {
    only(["const"]);
    if (!isScalar(node.const)) fail(`${path}/const`, "const must be a string, number, boolean or null");
    return;
  }
  if ("enum" in node) {
    only(["enum"]);
    if (!Array.isArray(node.enum) || node.enum.length === 0 || !node.enum.every(isScalar)) fail(`${path}/enum`, "enum must be a non-empty array of scalars");
    return;
  }
  if ("oneOf" in node || "anyOf" in node) {
    const key = "oneOf" in node ? "oneOf" : "anyOf";
    only([key]);
    const options = node[key];
    if (!Array.isArray(options) || options.length === 0) fail(`${path}/${key}`, `${key} must be a non-empty array`);
    options.forEach((o, i) => check(o, `${path}/${key}/${i}`, localDefs, depth + 1));
    return;
  }
  const type = node.type;
  if (Array.isArray(type)) {
    only(["type"]);
    if (type.length === 0 || !type.every((t) => typeof t === "string" && SCALAR_TYPES.has(t))) {
      fail(`${path}/type`, `a list of types may only name ${[...SCALAR_TYPES].join(", ")}`);
    }
    return;
  }
  if (typeof type !== "string" || !(type in KEYWORDS_BY_TYPE)) {
    fail(`${path}/type`, `type must be one of ${Object.keys(KEYWORDS_BY_TYPE).join(", ")} (or use const, enum, oneOf, $ref)`);
  }
  for (const k of keys) if (!KEYWORDS_BY_TYPE[type].has(k)) fail(`${path}/${k}`, `keyword "${k}" is not supported for type "${type}"`);
  for (const k of ["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"]) checkCount(node, k, path);
  if (type === "string" && node.format !== undefined && !STRING_FORMATS.has(node.format as string)) {
    fail(`${path}/format`, `format must be one of ${[...STRING_FORMATS].join(", ")}`);
  }
  if (type === "object") {
    if (node.properties !== undefined) {
      if (!isObject(node.properties)) fail(`${path}/properties`, "properties must be an object");
      for (const [name, sub] of Object.entries(node.properties)) check(sub, `${path}/properties/${name}`, localDefs, depth + 1);
    }
    if (node.required !== undefined && (!Array.isArray(node.required) || !node.required.every((r) => typeof r === "string"))) {
      fail(`${path}/required`, "required must be an array of property names");
    }
    const extra = node.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean") check(extra, `${path}/additionalProperties`, localDefs, depth + 1);
  }
  if (type === "array") {
    if (node.items !== undefined) check(node.items, `${path}/items`, localDefs, depth + 1);
    if (node.prefixItems !== undefined) {
      if (!Array.isArray(node.prefixItems)) fail(`${path}/prefixItems`, "prefixItems must be an array");
      node.prefixItems.forEach((s, i) => check(s, `${path}/prefixItems/${i}`, localDefs, depth + 1));
    }
  }
}

export type JsonSchema = Record<string, unknown>;

/**
 * Returns the schema, or throws a BAD_REQUEST that names the caller's field (`json_schema` on /run_prompt,
 * `response_format` on OpenAI's routes) and the unsupported part.
 */
export function checkJsonSchema(schema: unknown, field: string): JsonSchema {
  try {
    check(schema, "#", new Set(), 0);
  } catch (e) {
    if (e instanceof SchemaProblem) throw new KekahydeError("BAD_REQUEST", `"${field}" is not supported: ${e.message}.`, { field });
    throw e;
  }
  return schema as JsonSchema;
}

