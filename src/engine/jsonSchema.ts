/**
 * A checked JSON schema (src/server/jsonSchema.ts accepts only what node-llama-cpp can turn into a grammar)
 * in the form node-llama-cpp's grammar builder takes.
 */

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** node-llama-cpp's grammar knows `oneOf` only; as a grammar, `anyOf` means the same alternatives. */
export function toGrammarSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(toGrammarSchema);
  if (!isObject(schema)) return schema;
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k === "anyOf" ? "oneOf" : k, k === "const" || k === "enum" ? v : toGrammarSchema(v)]));
}
