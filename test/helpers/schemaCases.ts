import { SCHEMA_LIMITS } from "../../src/server/jsonSchema.ts";

/** The largest count a schema may give a repetition keyword. */
export const LIMIT = SCHEMA_LIMITS.repetitions;

/**
 * Schemas a grammar cannot hold, each with what its refusal must say about where and why. llama.cpp's parser
 * refuses the grammars node-llama-cpp builds for the minimums and the cycles, and drops an upper bound over
 * 2000 (it would not be enforced); the total would cost seconds and gigabytes at the size of a body. Upper
 * bounds ("max…") in tools are dropped rather than refused.
 */
export const UNCOMPILABLE: Array<[string, Record<string, unknown>, RegExp[]]> = [
  ["minLength 1e9", { type: "object", properties: { name: { type: "string", minLength: 1e9 } } }, [/#\/properties\/name\/minLength/, /at most 500/]],
  ["minItems 3000", { type: "object", properties: { list: { type: "array", items: { type: "string" }, minItems: 3000 } } }, [/#\/properties\/list\/minItems/, /at most 500/]],
  ["minProperties 1e6", { type: "object", properties: { bag: { type: "object", additionalProperties: true, minProperties: 1e6 } } }, [/#\/properties\/bag\/minProperties/, /at most 500/]],
  ["maxLength 1e6", { type: "object", properties: { text: { type: "string", maxLength: 1e6 } } }, [/#\/properties\/text\/maxLength/, /at most 500/]],
  ["a $ref to itself", { type: "object", properties: { v: { $ref: "#/$defs/self" } }, $defs: { self: { $ref: "#/$defs/self" } } }, [/#\/\$defs\/self/, /stand for itself/]],
  [
    "a $ref cycle",
    { type: "object", properties: { v: { $ref: "#/$defs/a" } }, $defs: { a: { $ref: "#/$defs/b" }, b: { anyOf: [{ type: "string" }, { $ref: "#/$defs/a" }] } } },
    [/#\/\$defs\/(a|b)/, /stand for itself/],
  ],
  [
    // node-llama-cpp resolves "b" inside "a" to the inner "b" once it has met it there: a → b → a.
    "a $ref cycle through a name used again in an inner $defs",
    {
      type: "object",
      $defs: { a: { $ref: "#/$defs/b" }, b: { type: "string" } },
      properties: { x: { $ref: "#/$defs/a" }, y: { type: "object", $defs: { b: { $ref: "#/$defs/a" } }, properties: { z: { $ref: "#/$defs/b" } } } },
    },
    [/#\/properties\/y\/\$defs\/b/, /may not reuse the name "b"/],
  ],
  [
    "bounds adding up past the total",
    { type: "object", properties: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`p${i}`, { type: "string", minLength: i, maxLength: LIMIT }])) },
    [/add up to 50500/, /at most 50000/],
  ],
];
