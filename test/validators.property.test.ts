import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { before, describe, it } from "node:test";
import fc from "fast-check";
import { KekahydeError } from "../src/errors.ts";
import { checkJsonSchema, SCHEMA_LIMITS } from "../src/server/jsonSchema.ts";
import { GgufFormatError, readGgufInfo } from "../src/gguf/reader.ts";
import { hostnameOf, isLoopbackName } from "../src/server/addresses.ts";
import { parseLoadModel, parseRunPrompt } from "../src/server/validation.ts";
import { fixtureFile, tinyModel } from "../testing/fixtures.ts";

// Properties over the validators that stand between the outside world and the engine: whatever comes in,
// they either accept it as a well-formed value or refuse it with our own typed error, quickly.

const RUNS = 200;

async function readOrRefuse(bytes: Uint8Array): Promise<"ok" | "refused"> {
  const path = await fixtureFile("property.gguf", bytes);
  try {
    await readGgufInfo(path);
    return "ok";
  } catch (e) {
    if (e instanceof GgufFormatError) return "refused";
    throw e;
  }
}

describe("GGUF header validator, property-based", () => {
  let model: Buffer;
  before(async () => {
    model = await readFile(await tinyModel());
  });

  it("refuses arbitrary bytes with a GgufFormatError, never anything else", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
        assert.equal(await readOrRefuse(bytes), "refused");
      }),
      { numRuns: RUNS },
    );
  });

  it("refuses arbitrary bytes behind a valid magic and version, quickly", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), fc.constantFrom(2, 3), async (tail, version) => {
        const bytes = Buffer.concat([Buffer.from("GGUF"), Buffer.from(new Uint32Array([version]).buffer), Buffer.from(tail)]);
        const started = performance.now();
        await readOrRefuse(bytes);
        assert.ok(performance.now() - started < 500);
      }),
      { numRuns: RUNS },
    );
  });

  it("either accepts or refuses the real model with bytes of its header changed, never throws otherwise", async () => {
    const headerEnd = 12_000; // the vocabulary and tensor table of the tiny model
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: headerEnd - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }),
        async (edits) => {
          const bytes = Buffer.from(model);
          for (const { at, value } of edits) bytes[at] = value;
          await readOrRefuse(bytes);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("refuses every truncation of the real model", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: model.length - 1 }), async (cut) => {
        assert.equal(await readOrRefuse(model.subarray(0, cut)), "refused");
      }),
      { numRuns: 60 },
    );
  });
});

const anyJson = fc.jsonValue({ maxDepth: 4 });

const scalar = fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.boolean(), fc.constant(null));
/** Schemas inside the grammar subset (src/server/jsonSchema.ts): each must be accepted as it is. */
const { schema: grammarSchema } = fc.letrec<{ schema: Record<string, unknown> }>((tie) => ({
  schema: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constantFrom(
      { type: "string" },
      { type: "number" },
      { type: "integer" },
      { type: "boolean" },
      { type: "null" },
      { type: "string", format: "date" },
      { type: "string", minLength: 1, maxLength: 5 },
      { type: "string", maxLength: SCHEMA_LIMITS.repetitions },
    ),
    scalar.map((value) => ({ const: value })),
    fc.array(scalar, { minLength: 1, maxLength: 4 }).map((values) => ({ enum: values })),
    fc.dictionary(fc.stringMatching(/^[a-z]{1,6}$/), tie("schema"), { maxKeys: 3 }).chain((properties) =>
      fc.subarray(Object.keys(properties)).map((required) => ({ type: "object", properties, required, additionalProperties: false })),
    ),
    tie("schema").map((items) => ({ type: "array", items, maxItems: 3 })),
    // A tree: a definition that recurses through an array (named afresh: an inner name may not repeat an outer one).
    fc.tuple(tie("schema"), fc.uuid()).map(([leaf, name]) => ({ $defs: { [name]: { type: "array", items: { anyOf: [leaf, { $ref: `#/$defs/${name}` }] } } }, $ref: `#/$defs/${name}` })),
    fc.array(tie("schema"), { minLength: 1, maxLength: 3 }).map((options) => ({ anyOf: options })),
  ),
}));
/** Parts node-llama-cpp cannot express (or would silently ignore): each must be refused. */
const UNSUPPORTED: Array<[string, unknown]> = [
  ["pattern", { type: "string", pattern: "^a+$" }],
  ["allOf", { allOf: [{ type: "string" }] }],
  ["not", { not: { type: "string" } }],
  ["an unknown type", { type: "foo" }],
  ["a negative length", { type: "string", minLength: -1 }],
  ["an unsupported format", { type: "string", format: "email" }],
  ["a dangling $ref", { $ref: "#/$defs/nowhere" }],
  ["a number bound", { type: "number", minimum: 0 }],
  ["an empty enum", { enum: [] }],
  // Past what a grammar can hold (SCHEMA_LIMITS): llama.cpp's parser refuses these, or drops the bound.
  ["a length past the limit", { type: "string", minLength: SCHEMA_LIMITS.repetitions + 1 }],
  ["an item count past the limit", { type: "array", maxItems: 1e9 }],
  ["a property count past the limit", { type: "object", additionalProperties: true, minProperties: 1e6 }],
  ["a $ref to itself", { $defs: { me: { $ref: "#/$defs/me" } }, $ref: "#/$defs/me" }],
  ["a $ref cycle through anyOf", { $defs: { a: { anyOf: [{ type: "null" }, { $ref: "#/$defs/b" }] }, b: { $ref: "#/$defs/a" } }, $ref: "#/$defs/a" }],
];

function acceptsOrRefusesWithField(parse: () => unknown): unknown {
  try {
    return parse();
  } catch (e) {
    assert.ok(e instanceof KekahydeError, `a ${(e as Error).name}: ${(e as Error).message}`);
    assert.equal(e.code, "BAD_REQUEST");
    assert.equal(typeof e.details.field, "string", "the error names a field");
    return null;
  }
}

describe("request validators, property-based", () => {
  it("turn any JSON object into a well-typed run request or a BAD_REQUEST naming the field", () => {
    const body = fc.dictionary(
      fc.constantFrom("prompt", "raw", "system", "max_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "stop", "json_schema", "stream", "timeout_s", "other"),
      fc.oneof(anyJson, fc.double(), fc.integer(), fc.string(), fc.boolean()),
    );
    fc.assert(
      fc.property(body, (b) => {
        const r = acceptsOrRefusesWithField(() => parseRunPrompt(b)) as ReturnType<typeof parseRunPrompt> | null;
        if (!r) return;
        assert.equal(typeof r.prompt, "string");
        assert.ok(r.prompt.trim().length > 0);
        assert.equal(typeof r.raw, "boolean");
        assert.equal(typeof r.stream, "boolean");
        for (const v of Object.values(r.sampling)) assert.ok(Number.isFinite(v));
        if (r.maxTokens !== undefined) assert.ok(Number.isInteger(r.maxTokens) && r.maxTokens >= 1);
        if (r.stop !== undefined) assert.ok(r.stop.every((s) => typeof s === "string" && s.length > 0));
      }),
      { numRuns: 1000 },
    );
  });

  it("turn any JSON object into a load request or a BAD_REQUEST naming the field", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom("path", "context_size", "gpu_layers", "threads"), fc.oneof(anyJson, fc.double(), fc.integer())), (b) => {
        const r = acceptsOrRefusesWithField(() => parseLoadModel(b)) as ReturnType<typeof parseLoadModel> | null;
        if (!r) return;
        assert.equal(typeof r.path, "string");
        for (const v of Object.values(r.settings)) assert.ok(Number.isInteger(v) && v >= 0);
      }),
      { numRuns: 1000 },
    );
  });

  it("accept or refuse any JSON value as a schema without throwing anything else", () => {
    fc.assert(
      fc.property(anyJson, (schema) => {
        acceptsOrRefusesWithField(() => checkJsonSchema(schema, "json_schema"));
      }),
      { numRuns: 1000 },
    );
  });

  it("accept every schema in the subset node-llama-cpp can turn into a grammar", () => {
    fc.assert(
      fc.property(grammarSchema, (schema) => {
        assert.deepEqual(checkJsonSchema(schema, "json_schema"), schema);
      }),
      { numRuns: 500 },
    );
  });

  it("refuse a schema with any part outside that subset, naming the caller's field and the part", () => {
    fc.assert(
      fc.property(grammarSchema, fc.constantFrom(...UNSUPPORTED), fc.constantFrom("json_schema", "response_format"), (schema, [what, bad], field) => {
        const broken = { type: "object", properties: { ok: schema, broken: bad } };
        assert.throws(
          () => checkJsonSchema(broken, field),
          (e: KekahydeError) => e.code === "BAD_REQUEST" && e.details.field === field && e.message.includes(`"${field}" is not supported`) && e.message.includes("#/properties/broken"),
          what,
        );
      }),
      { numRuns: 300 },
    );
  });

  it("never take a non-loopback name for a loopback one", () => {
    fc.assert(
      fc.property(fc.domain(), (domain) => {
        fc.pre(!/(^|\.)localhost$/.test(domain));
        assert.equal(isLoopbackName(hostnameOf(domain)), false);
        assert.equal(isLoopbackName(hostnameOf(`${domain}:3000`)), false);
        assert.equal(isLoopbackName(hostnameOf(`127.0.0.1.${domain}`)), false);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        assert.equal(isLoopbackName(ip), ip.startsWith("127."));
      }),
      { numRuns: 500 },
    );
  });
});
