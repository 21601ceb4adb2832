import { KekahydeError } from "../errors.ts";
import { MAX_JSON_DEPTH, pathBeyondDepth, type JsonPath } from "./middleware/jsonBody.ts";

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

/**
 * What a schema may ask of the grammar built from it, in one place (docs/api.md, "Limits on JSON schemas").
 * Past these, building the grammar in the engine fails (and the model is unloaded, as after any engine
 * failure), silently leaves a bound out, or costs seconds and gigabytes; so they are refused here, before the
 * engine sees the schema.
 */
export const SCHEMA_LIMITS = {
  /** Levels of schemas within schemas: a property, an item, an alternative or a definition is one level. */
  depth: 32,
  /**
   * The largest minLength, maxLength, minItems, maxItems, minProperties or maxProperties. llama.cpp's parser
   * writes a bounded repetition out as one rule per count, and refuses it ("exceeds sane defaults") once the
   * count times the rules repeated reaches 2000; node-llama-cpp repeats groups of up to 3 rules, so 666 is the
   * most that always compiles (measured: arrays with prefixItems fail at 667). An upper bound over 2000 does
   * not fail: the parser drops it, and would not enforce it.
   */
  repetitions: 500,
  /**
   * All the repetitions of one schema, summed (a string's max, else its min; strings with equal bounds
   * share one rule). Each costs a rule in every grammar built from the schema: 20,000 distinct bounded strings
   * (a 1 MiB body) took the parser 11 s and 2 GB; 50,000 repetitions take under 100 ms.
   */
  totalRepetitions: 50_000,
} as const;

/** The upper bounds among the keywords that bound a repetition (each at most SCHEMA_LIMITS.repetitions). */
export const UPPER_BOUND_KEYWORDS: ReadonlySet<string> = new Set(["maxLength", "maxItems", "maxProperties"]);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isScalar = (v: unknown) => v === null || ["string", "number", "boolean"].includes(typeof v);

/** Thrown inside the walk; turned into a BAD_REQUEST naming the caller's field by checkJsonSchema. */
class SchemaProblem extends Error {}

function fail(path: string, reason: string): never {
  throw new SchemaProblem(`${reason} at ${path}`);
}

function checkCount(node: Record<string, unknown>, key: string, path: string): number {
  const v = node[key];
  if (v === undefined) return 0;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) fail(`${path}/${key}`, `${key} must be a non-negative integer`);
  if (v > SCHEMA_LIMITS.repetitions) fail(`${path}/${key}`, `${key} may be at most ${SCHEMA_LIMITS.repetitions} (a grammar writes out one rule per count)`);
  return v;
}

/** The definitions in reach of a schema: its own `$defs` over those of the schemas around it. */
interface Scope {
  defs: Record<string, unknown>;
  parent: Scope | null;
}

function definition(scope: Scope | null, name: string): object | undefined {
  for (let s = scope; s; s = s.parent) if (Object.hasOwn(s.defs, name) && isObject(s.defs[name])) return s.defs[name];
  return undefined;
}

/** What the walk gathers for the checks of the whole schema (repetitions, $ref cycles). */
interface Walk {
  repetitions: number;
  /** "min-max" of the bounded strings counted: node-llama-cpp builds one rule for equal bounds. */
  stringBounds: Set<string>;
  /** Each definition, with where it stands. */
  definitions: Map<object, string>;
  /** Each `$ref` node, with the definition it names. */
  references: Map<object, object>;
}

/** Counts a node's repetitions into the walk (see SCHEMA_LIMITS.totalRepetitions). */
function countRepetitions(node: Record<string, unknown>, type: string, path: string, walk: Walk): void {
  const [minKey, maxKey] = type === "string" ? ["minLength", "maxLength"] : type === "array" ? ["minItems", "maxItems"] : ["minProperties", "maxProperties"];
  const min = checkCount(node, minKey, path);
  const max = checkCount(node, maxKey, path);
  if (type === "string") {
    // No maximum is not the same rule as a maximum of 0 (checkCount's 0 for an absent key).
    const bounds = `${min}-${node[maxKey] === undefined ? "" : max}`;
    if (walk.stringBounds.has(bounds)) return;
    walk.stringBounds.add(bounds);
  }
  walk.repetitions += Math.max(min, max);
}

function check(node: unknown, path: string, scope: Scope | null, depth: number, walk: Walk): void {
  if (depth > SCHEMA_LIMITS.depth) fail(path, `schemas may nest at most ${SCHEMA_LIMITS.depth} levels`);
  if (!isObject(node)) fail(path, "a schema must be an object");
  const keys = Object.keys(node).filter((k) => !ANNOTATIONS.has(k));
  let localScope = scope;
  if (node.$defs !== undefined) {
    if (!isObject(node.$defs)) fail(`${path}/$defs`, "$defs must be an object");
    localScope = { defs: node.$defs, parent: scope };
    for (const [name, def] of Object.entries(node.$defs)) {
      // node-llama-cpp resolves a name in whichever scope it last met the definition in, not where it stands:
      // with one name for two definitions, a reference may land on the other one (and make a cycle).
      if (definition(scope, name)) fail(`${path}/$defs/${name}`, `a definition may not reuse the name "${name}" of an enclosing one`);
      if (isObject(def)) walk.definitions.set(def, `${path}/$defs/${name}`);
      check(def, `${path}/$defs/${name}`, localScope, depth + 1, walk);
    }
  }
  const only = (allowed: string[]) => {
    for (const k of keys) if (!allowed.includes(k) && k !== "$defs") fail(`${path}/${k}`, `keyword "${k}" cannot be combined here`);
  };

  if ("$ref" in node) {
    only(["$ref"]);
    const ref = node.$ref;
    const name = typeof ref === "string" && ref.startsWith("#/$defs/") ? ref.slice("#/$defs/".length) : null;
    const target = name === null ? undefined : definition(localScope, name);
    if (target === undefined) fail(`${path}/$ref`, `only "#/$defs/<name>" references to defined names are supported`);
    walk.references.set(node, target);
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
    options.forEach((o, i) => check(o, `${path}/${key}/${i}`, localScope, depth + 1, walk));
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
  if (type === "string" || type === "array" || type === "object") countRepetitions(node, type, path, walk);
  if (type === "string" && node.format !== undefined && !STRING_FORMATS.has(node.format as string)) {
    fail(`${path}/format`, `format must be one of ${[...STRING_FORMATS].join(", ")}`);
  }
  if (type === "object") {
    if (node.properties !== undefined) {
      if (!isObject(node.properties)) fail(`${path}/properties`, "properties must be an object");
      for (const [name, sub] of Object.entries(node.properties)) check(sub, `${path}/properties/${name}`, localScope, depth + 1, walk);
    }
    if (node.required !== undefined && (!Array.isArray(node.required) || !node.required.every((r) => typeof r === "string"))) {
      fail(`${path}/required`, "required must be an array of property names");
    }
    const extra = node.additionalProperties;
    if (extra !== undefined && typeof extra !== "boolean") check(extra, `${path}/additionalProperties`, localScope, depth + 1, walk);
  }
  if (type === "array") {
    if (node.items !== undefined) check(node.items, `${path}/items`, localScope, depth + 1, walk);
    if (node.prefixItems !== undefined) {
      if (!Array.isArray(node.prefixItems)) fail(`${path}/prefixItems`, "prefixItems must be an array");
      node.prefixItems.forEach((s, i) => check(s, `${path}/prefixItems/${i}`, localScope, depth + 1, walk));
    }
  }
}

/**
 * The definitions a schema stands for without a character of its own first: through `$ref`, `oneOf` and
 * `anyOf` only (an object or array starts with a bracket).
 */
function leadingDefinitions(node: unknown, walk: Walk): object[] {
  if (!isObject(node)) return [];
  const target = walk.references.get(node);
  if (target) return [target];
  const options = node.oneOf ?? node.anyOf;
  return Array.isArray(options) ? options.flatMap((o) => leadingDefinitions(o, walk)) : [];
}

/**
 * A definition that stands for itself through leading definitions alone (`{"$ref": "#/$defs/a"}` inside
 * `a`, or a → b → a): a grammar rule that starts with itself, which llama.cpp's parser refuses as left
 * recursion. Recursion through an object or array (a tree) is fine. Iterative depth-first search: a chain of
 * definitions may be as long as the body allows.
 */
function leftRecursiveDefinition(walk: Walk): object | null {
  const state = new Map<object, "open" | "done">();
  for (const start of walk.definitions.keys()) {
    if (state.has(start)) continue;
    state.set(start, "open");
    const stack = [{ node: start, next: leadingDefinitions(start, walk), at: 0 }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.at === top.next.length) {
        state.set(top.node, "done");
        stack.pop();
        continue;
      }
      const target = top.next[top.at++];
      if (state.get(target) === "open") return target;
      if (!state.has(target)) {
        state.set(target, "open");
        stack.push({ node: target, next: leadingDefinitions(target, walk), at: 0 });
      }
    }
  }
  return null;
}

/** A JSON pointer to where a path leads in a schema (`#/properties/a`), cut after a few levels. */
function pointer(path: JsonPath, segments = 8): string {
  return `#/${path.slice(0, segments).join("/")}${path.length > segments ? "/…" : ""}`;
}

/**
 * Refuses a schema nested deeper than MAX_JSON_DEPTH levels before any code that recurses walks it: the
 * request parsers call this where a schema enters (tools' `parameters` are normalized before they are
 * checked). The body's own check (src/server/middleware/jsonBody.ts) stops such a body first; this one names
 * the schema's field wherever a schema comes from.
 */
export function checkSchemaNesting(schema: unknown, field: string): void {
  const path = pathBeyondDepth(schema, MAX_JSON_DEPTH);
  if (path !== null) {
    const reason = `it is nested deeper than ${MAX_JSON_DEPTH} levels at ${pointer(path)} (schemas may nest at most ${SCHEMA_LIMITS.depth})`;
    throw new KekahydeError("BAD_REQUEST", `"${field}" is not supported: ${reason}.`, { field });
  }
}

function checkWhole(schema: unknown): void {
  const walk: Walk = { repetitions: 0, stringBounds: new Set(), definitions: new Map(), references: new Map() };
  check(schema, "#", null, 0, walk);
  if (walk.repetitions > SCHEMA_LIMITS.totalRepetitions) {
    fail("#", `its length, item and property bounds add up to ${walk.repetitions}; at most ${SCHEMA_LIMITS.totalRepetitions} in one schema`);
  }
  const recursive = leftRecursiveDefinition(walk);
  if (recursive) fail(walk.definitions.get(recursive)!, 'a definition may not stand for itself through "$ref", "oneOf" or "anyOf" alone: put an object or array between');
}

export type JsonSchema = Record<string, unknown>;

/**
 * Returns the schema, or throws a BAD_REQUEST that names the caller's field (`json_schema` on /run_prompt,
 * `response_format.json_schema.schema` on OpenAI's routes, `format` on Ollama's) and the unsupported part.
 */
export function checkJsonSchema(schema: unknown, field: string): JsonSchema {
  checkSchemaNesting(schema, field);
  try {
    checkWhole(schema);
  } catch (e) {
    if (e instanceof SchemaProblem) throw new KekahydeError("BAD_REQUEST", `"${field}" is not supported: ${e.message}.`, { field });
    throw e;
  }
  return schema as JsonSchema;
}
