import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import { toGrammarSchema } from "../src/engine/jsonSchema.ts";
import { KekahydeError } from "../src/errors.ts";
import { checkJsonSchema } from "../src/server/jsonSchema.ts";
import { MAX_JSON_DEPTH, pathBeyondDepth, textNestsDeeperThan } from "../src/server/middleware/jsonBody.ts";
import { parseChatCompletion } from "../src/server/openai/requests.ts";
import { parseChat } from "../src/server/ollama/requests.ts";
import { parseTools } from "../src/server/tools.ts";
import { LIMIT, UNCOMPILABLE } from "./helpers/schemaCases.ts";

/**
 * The limits on JSON schemas (src/server/jsonSchema.ts, SCHEMA_LIMITS) and on the nesting of request JSON
 * (src/server/middleware/jsonBody.ts): what the grammar cannot hold is refused with a BAD_REQUEST naming the
 * field and the limit, nothing recurses over a value before its depth is known, and whatever is accepted
 * compiles in node-llama-cpp (the real grammar builder and llama.cpp parser, in this process).
 */

/** `{"a": {"a": … {} }}` nested `levels` deep, built without recursion. */
function nestedObjects(levels: number, leaf: unknown = {}): unknown {
  let value = leaf;
  for (let i = 0; i < levels; i++) value = { type: "object", properties: { a: value } };
  return value;
}

function nestedArrays(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

/** Asserts `run` throws a BAD_REQUEST for `field` whose message matches each pattern. */
function assertRefused(run: () => unknown, field: string, ...patterns: RegExp[]): void {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof KekahydeError, `not a KekahydeError: ${String(e)}`);
    assert.equal(e.code, "BAD_REQUEST");
    assert.equal(e.details.field, field);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

describe("Request JSON nesting", () => {
  it("finds where a value nests too deep without recursing, at any depth", () => {
    assert.equal(pathBeyondDepth(nestedArrays(MAX_JSON_DEPTH - 1), MAX_JSON_DEPTH), null, "the body object's level counts too");
    const path = pathBeyondDepth({ messages: nestedArrays(200_000) }, MAX_JSON_DEPTH);
    assert.deepEqual(path, ["messages", ...Array<number>(MAX_JSON_DEPTH - 1).fill(0)]);
  });

  it("measures the nesting of JSON text by its brackets outside strings", () => {
    assert.equal(textNestsDeeperThan(`{"a":${"[".repeat(99)}${"]".repeat(99)}}`, MAX_JSON_DEPTH), false);
    assert.equal(textNestsDeeperThan(`{"a":${"[".repeat(100)}${"]".repeat(100)}}`, MAX_JSON_DEPTH), true);
    assert.equal(textNestsDeeperThan(JSON.stringify({ a: "[".repeat(500), b: '\\"{{{' }), MAX_JSON_DEPTH), false);
    assert.equal(textNestsDeeperThan(`["\\\\",${"[".repeat(100)}`, MAX_JSON_DEPTH), true, "an escaped backslash ends no string");
  });

  it("refuses schemas nested 20,000 levels where they enter, before anything recurses over them", () => {
    const deep = nestedObjects(20_000);
    const tools = [{ type: "function", function: { name: "f", parameters: deep } }];
    assertRefused(() => parseTools(tools, { typeRequired: true }), "tools[0].function.parameters", /nested deeper than 100 levels/, /at most 32/);
    assertRefused(() => checkJsonSchema(deep, "format"), "format", /nested deeper than 100 levels at #\/properties\/a\/properties/);
    const user = [{ role: "user", content: "x" }];
    assertRefused(
      () => parseChatCompletion({ messages: user, response_format: { type: "json_schema", json_schema: { name: "x", schema: deep } } }),
      "response_format.json_schema.schema",
      /nested deeper than 100/,
    );
    assertRefused(() => parseChat({ model: "m", messages: user, format: deep }), "format", /nested deeper than 100/);
    assertRefused(() => parseChat({ model: "m", messages: user, tools }), "tools[0].function.parameters", /nested deeper than 100/);
  });

  it("keeps the 32-level rule for schemas less deep than that", () => {
    assertRefused(() => checkJsonSchema(nestedObjects(40, { type: "string" }), "format"), "format", /schemas may nest at most 32 levels/);
    assert.ok(checkJsonSchema(nestedObjects(32, { type: "string" }), "format"));
  });
});

describe("Limits on JSON schemas", () => {
  for (const [what, schema, patterns] of UNCOMPILABLE) {
    it(`refuses ${what} in every field a schema comes in, naming the field, the place and the limit`, () => {
      assertRefused(() => checkJsonSchema(schema, "format"), "format", ...patterns);
      const user = [{ role: "user", content: "x" }];
      assertRefused(() => parseChatCompletion({ messages: user, response_format: { type: "json_schema", json_schema: { name: "x", schema } } }), "response_format.json_schema.schema", ...patterns);
      assertRefused(() => parseChat({ model: "m", messages: user, format: schema }), "format", ...patterns);
      // Tools drop upper bounds they cannot enforce (as agents' schemas carry them), and refuse the rest.
      if (what.startsWith("max")) return;
      assertRefused(() => parseTools([{ type: "function", function: { name: "f", parameters: schema } }], { typeRequired: true }), "tools[0].function.parameters", ...patterns);
    });
  }

  it("takes counts up to the limit, and recursion through an object or array (a tree)", () => {
    const atLimit = { type: "object", properties: { s: { type: "string", minLength: LIMIT, maxLength: LIMIT }, l: { type: "array", minItems: LIMIT, maxItems: LIMIT } } };
    assert.equal(checkJsonSchema(atLimit, "format"), atLimit);
    const tree = { $defs: { node: { type: "object", properties: { name: { type: "string" }, children: { type: "array", items: { $ref: "#/$defs/node" } } } } }, $ref: "#/$defs/node" };
    assert.equal(checkJsonSchema(tree, "format"), tree);
    // Names used again in inner $defs, where they do not shadow an outer one.
    const siblings = { type: "object", properties: { x: { type: "array", items: { $ref: "#/$defs/n" }, $defs: { n: { type: "string" } } }, y: { type: "array", items: { $ref: "#/$defs/n" }, $defs: { n: { type: "integer" } } } } };
    assert.equal(checkJsonSchema(siblings, "format"), siblings);
  });

  it("drops a tool's upper bounds past the limit, as bounds a grammar cannot enforce", () => {
    const parameters = { type: "object", properties: { text: { type: "string", minLength: 1, maxLength: 10_000 }, tags: { type: "array", items: { type: "string" }, maxItems: 1e9 } } };
    const [tool] = parseTools([{ type: "function", function: { name: "f", parameters } }], { typeRequired: true })!;
    assert.deepEqual(tool.parameters, { type: "object", properties: { text: { type: "string", minLength: 1 }, tags: { type: "array", items: { type: "string" } } } });
  });

  it("refuses a chain of definitions as long as a body allows without recursing over it", () => {
    const defs = Object.fromEntries(Array.from({ length: 30_000 }, (_, i) => [`d${i}`, { $ref: `#/$defs/d${(i + 1) % 30_000}` }]));
    assertRefused(() => checkJsonSchema({ $defs: defs, $ref: "#/$defs/d0" }, "format"), "format", /stand for itself/);
  });
});

describe("Schemas inside the limits compile in node-llama-cpp", () => {
  let llama: Llama;
  before(async () => {
    llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.disabled });
  });
  after(async () => {
    await llama?.dispose();
  });
  const compiles = async (schema: unknown) => {
    await llama.createGrammarForJsonSchema(toGrammarSchema(checkJsonSchema(schema, "format")) as never);
  };
  const item = { type: "object", properties: { a: { type: "integer" } } };

  it("every repetition at the limit, in each shape node-llama-cpp writes one", async () => {
    const shapes = [
      { type: "string", minLength: LIMIT },
      { type: "string", maxLength: LIMIT },
      { type: "string", minLength: LIMIT - 1, maxLength: LIMIT },
      { type: "array", items: item, minItems: LIMIT },
      { type: "array", items: item, maxItems: LIMIT },
      { type: "array", prefixItems: [item], items: { type: "object", properties: { b: { type: "string" } } }, minItems: LIMIT },
      { type: "array", prefixItems: [item], items: { type: "object", properties: { b: { type: "string" } } }, maxItems: LIMIT },
      { type: "object", additionalProperties: item, minProperties: LIMIT },
      { type: "object", properties: { x: { type: "null" } }, additionalProperties: item, maxProperties: LIMIT },
      { type: "array", items: { type: "array", items: { type: "string", maxLength: LIMIT }, maxItems: LIMIT }, minItems: LIMIT },
    ];
    for (const schema of shapes) await compiles(schema);
  });

  it("a schema whose bounds add up to the total, quickly", async () => {
    const properties = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`p${i}`, { type: "string", minLength: i, maxLength: LIMIT }]));
    const started = performance.now();
    await compiles({ type: "object", properties });
    assert.ok(performance.now() - started < 2_000, `${Math.round(performance.now() - started)} ms`);
  });

  it("any schema with counts up to the limit and definitions that recurse through arrays", async () => {
    const count = fc.integer({ min: 0, max: LIMIT });
    /** A lower and an upper bound (either may be missing), the lower one no greater. */
    const bounds = (min: string, max: string) =>
      fc.tuple(fc.option(count), fc.option(count)).map(([a, b]) => ({
        ...(a !== null && { [min]: b === null ? a : Math.min(a, b) }),
        ...(b !== null && { [max]: a === null ? b : Math.max(a, b) }),
      }));
    const leaf = fc.oneof(
      bounds("minLength", "maxLength").map((b) => ({ type: "string", ...b })),
      fc.constantFrom({ type: "integer" }, { type: "boolean" }, { $ref: "#/$defs/tree" }),
    );
    const node = fc.letrec<{ schema: Record<string, unknown> }>((tie) => ({
      schema: fc.oneof(
        { depthSize: "small" },
        leaf,
        fc.tuple(tie("schema"), bounds("minItems", "maxItems")).map(([items, b]) => ({ type: "array", items, ...b })),
        fc
          .tuple(fc.array(tie("schema"), { minLength: 1, maxLength: 3 }), tie("schema"), bounds("minItems", "maxItems"))
          .map(([prefixItems, items, b]) => ({ type: "array", prefixItems, items, ...b })),
        fc
          .tuple(fc.dictionary(fc.stringMatching(/^[a-z]{1,4}$/), tie("schema"), { maxKeys: 3 }), tie("schema"), bounds("minProperties", "maxProperties"))
          .map(([properties, additionalProperties, b]) => ({ type: "object", properties, additionalProperties, ...b })),
        fc.array(tie("schema"), { minLength: 1, maxLength: 3 }).map((options) => ({ anyOf: options })),
      ),
    })).schema;
    const tree = { type: "object", properties: { name: { type: "string", maxLength: LIMIT }, children: { type: "array", items: { $ref: "#/$defs/tree" } } } };
    await fc.assert(
      fc.asyncProperty(node, async (schema) => {
        await compiles({ type: "object", properties: { value: schema }, $defs: { tree } });
      }),
      { numRuns: 150 },
    );
  });

  it("definitions of one name in sibling $defs, each resolved to its own", async () => {
    const siblings = { type: "object", properties: { x: { type: "array", items: { $ref: "#/$defs/n" }, $defs: { n: { type: "string" } } }, y: { type: "array", items: { $ref: "#/$defs/n" }, $defs: { n: { type: "integer" } } } } };
    const grammar = await llama.createGrammarForJsonSchema(toGrammarSchema(checkJsonSchema(siblings, "format")) as never);
    assert.deepEqual(grammar.parse('{"x": ["a"], "y": [1]}'), { x: ["a"], y: [1] });
  });

  it("refuses cycles the llama.cpp parser refuses too", async () => {
    for (const [what, schema] of UNCOMPILABLE.filter(([what]) => what.includes("$ref"))) {
      await assert.rejects(llama.createGrammarForJsonSchema(toGrammarSchema(schema) as never), /Failed to parse grammar/, what);
    }
  });
});
