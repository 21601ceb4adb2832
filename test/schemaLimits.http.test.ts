import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { QWEN25_FLAVOUR } from "../testing/gguf/toolModel.ts";
import { MAX_JSON_DEPTH } from "../src/server/middleware/jsonBody.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { LIMIT, UNCOMPILABLE } from "./helpers/schemaCases.ts";
import { toolModel } from "./helpers/toolModels.ts";

/**
 * Schemas a grammar cannot hold, and request JSON nested deeper than the daemon walks, sent to the real daemon
 * and engine with the official openai and ollama clients (raw JSON where a client cannot even write the body):
 * each is a 400 in the route's own error shape naming the field and the limit, answered before the engine sees
 * the request, and the model stays loaded and serving. Before these checks the engine failed building the
 * grammar ("Failed to parse grammar"), the daemon answered 500 and unloaded the model; the deep bodies
 * overflowed the stack of the daemon's own walkers (500 Internal error).
 */

const MODEL = "qwen-tools";
const USER = [{ role: "user" as const, content: "x" }];

/** A body's JSON text with `"@deep"` replaced by `levels` nested arrays: no JSON.stringify can write it. */
function withDeepValue(body: Record<string, unknown>, levels: number): string {
  return JSON.stringify(body).replace('"@deep"', `${"[".repeat(levels)}1${"]".repeat(levels)}`);
}

/** A body's JSON text with `"@deep"` replaced by a schema of `levels` nested objects. */
function withDeepSchema(body: Record<string, unknown>, levels: number): string {
  return JSON.stringify(body).replace('"@deep"', `${'{"type":"object","properties":{"a":'.repeat(levels)}{"type":"string"}${"}}".repeat(levels)}`);
}

describe("Schemas and request JSON past the limits", () => {
  let d: TestDaemon;
  let dir: string;
  let openai: OpenAI;
  let ollama: Ollama;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-schema-limits-"));
    await copyFile(await toolModel(QWEN25_FLAVOUR), join(dir, `${MODEL}.gguf`));
    d = await startTestDaemon({ modelsDirs: [dir] });
    openai = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "unused", maxRetries: 0 });
    ollama = new Ollama({ host: d.url });
    // Loaded before the bad requests, so that "still loaded" means something.
    await openai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 2 });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The model is loaded and idle, and a plain request through each API is served. */
  async function assertStillServing(): Promise<void> {
    const ps = (await (await d.get("/api/ps")).json()) as { models: Array<{ name: string }> };
    assert.ok(ps.models.some((m) => m.name.startsWith(MODEL)), JSON.stringify(ps));
    const status = await d.status();
    assert.equal(status.models.find((m: { name: string }) => m.name === MODEL)?.state, "idle", JSON.stringify(status.models));
    const chat = await openai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 2 });
    assert.equal(chat.choices[0].finish_reason, "length");
    const reply = await ollama.chat({ model: MODEL, messages: USER, options: { num_predict: 2 } });
    assert.equal(reply.done, true);
  }

  const openAiRefusal = (param: string, patterns: RegExp[]) => (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    const error = e.error as { message: string; type: string; code: string; param?: string };
    assert.equal(error.type, "invalid_request_error");
    assert.equal(error.code, "bad_request");
    assert.equal(error.param, param);
    for (const p of patterns) assert.match(error.message, p);
    return true;
  };
  const ollamaRefusal = (field: string, patterns: RegExp[]) => (e: unknown) => {
    const error = e as Error & { status_code?: number };
    assert.equal(error.status_code, 400, String(e));
    assert.ok(error.message.includes(`"${field}"`), error.message);
    for (const p of patterns) assert.match(error.message, p);
    return true;
  };

  for (const [what, schema, patterns] of UNCOMPILABLE) {
    it(`${what}: 400 naming the field and the limit on OpenAI's and Ollama's chat, response_format, format and tools; the model serves on`, async () => {
      await assert.rejects(
        openai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 2, response_format: { type: "json_schema", json_schema: { name: "out", schema } } }),
        openAiRefusal("response_format.json_schema.schema", patterns),
      );
      await assert.rejects(ollama.chat({ model: MODEL, messages: USER, format: schema, options: { num_predict: 2 } }), ollamaRefusal("format", patterns));
      // Tools drop upper bounds a grammar cannot enforce; every other case is refused in tools too.
      if (!what.startsWith("max")) {
        const tools = [{ type: "function" as const, function: { name: "f", parameters: schema } }];
        await assert.rejects(
          openai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 40, tools, tool_choice: "required" }),
          openAiRefusal("tools[0].function.parameters", patterns),
        );
        await assert.rejects(ollama.chat({ model: MODEL, messages: USER, tools, options: { num_predict: 40 } }), ollamaRefusal("tools[0].function.parameters", patterns));
      }
      await assertStillServing();
    });
  }

  it("takes a tool whose upper bound is past the limit: the bound is dropped, as one a grammar cannot enforce", async () => {
    // 1500: past what llama.cpp's parser compiles (an upper bound of 2000 or more it would drop itself).
    const parameters = { type: "object", properties: { text: { type: "string", minLength: 2, maxLength: 1_500 } }, required: ["text"] };
    const tools = [{ type: "function" as const, function: { name: "f", parameters } }];
    // The char model never closes a string argument: the call runs to max_tokens, under the grammar.
    const r = await openai.chat.completions.create({ model: MODEL, messages: USER, tools, tool_choice: "required", max_tokens: 30 });
    assert.equal(r.choices[0].finish_reason, "length");
    await assertStillServing();
  });

  it("takes counts at the limit and a recursive tree schema", async () => {
    const schema = {
      type: "object",
      properties: { name: { type: "string", minLength: 1, maxLength: LIMIT }, tree: { $ref: "#/$defs/node" } },
      $defs: { node: { type: "object", properties: { children: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: LIMIT } } } },
    };
    const r = await openai.chat.completions.create({ model: MODEL, messages: USER, max_tokens: 4, response_format: { type: "json_schema", json_schema: { name: "out", schema } } });
    assert.equal(r.choices[0].finish_reason, "length");
    assert.ok(r.choices[0].message.content?.startsWith("{"), r.choices[0].message.content ?? "");
  });

  describe("request JSON nested 20,000 levels", () => {
    const limit = new RegExp(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    const cases: Array<[string, string, string, string]> = [
      ["OpenAI tools' parameters", "/v1/chat/completions", withDeepSchema({ model: MODEL, messages: USER, tools: [{ type: "function", function: { name: "f", parameters: "@deep" } }] }, 20_000), "tools[0].function.parameters"],
      ["OpenAI response_format", "/v1/chat/completions", withDeepSchema({ model: MODEL, messages: USER, response_format: { type: "json_schema", json_schema: { name: "x", schema: "@deep" } } }, 20_000), "response_format.json_schema.schema"],
      ["OpenAI message content", "/v1/chat/completions", withDeepValue({ model: MODEL, messages: [{ role: "user", content: "@deep" }] }, 20_000), "messages[0].content"],
      [
        "OpenAI tool call arguments",
        "/v1/chat/completions",
        withDeepValue({ model: MODEL, messages: [...USER, { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "@deep" } }] }, { role: "tool", tool_call_id: "c1", content: "ok" }] }, 20_000),
        "messages[1].tool_calls[0].function.arguments",
      ],
      ["Ollama tools' parameters", "/api/chat", withDeepSchema({ model: MODEL, messages: USER, tools: [{ type: "function", function: { name: "f", parameters: "@deep" } }] }, 20_000), "tools[0].function.parameters"],
      ["Ollama format", "/api/chat", withDeepSchema({ model: MODEL, messages: USER, format: "@deep" }, 20_000), "format"],
      ["Ollama options", "/api/chat", withDeepValue({ model: MODEL, messages: USER, options: { stop: "@deep" } }, 20_000), "options.stop"],
      [
        "Ollama tool call arguments",
        "/api/chat",
        withDeepValue({ model: MODEL, messages: [...USER, { role: "assistant", content: "", tool_calls: [{ function: { name: "f", arguments: { a: "@deep" } } }] }, { role: "tool", content: "ok" }] }, 20_000),
        "messages[1].tool_calls[0].function.arguments",
      ],
    ];
    for (const [what, path, body, at] of cases) {
      it(`${what}: 400 with the depth limit, where it is, in the API's own error shape`, async () => {
        const res = await d.post(path, body);
        assert.equal(res.status, 400);
        const answer = (await res.json()) as { error: string | { message: string; type: string; code: string; param: string } };
        const top = at.split(/[.[]/)[0];
        if (path.startsWith("/v1/")) {
          assert.ok(typeof answer.error === "object");
          assert.equal(answer.error.type, "invalid_request_error");
          assert.equal(answer.error.code, "bad_request");
          assert.equal(answer.error.param, top);
          assert.match(answer.error.message, limit);
          assert.ok(answer.error.message.includes(`at ${at}`), answer.error.message);
        } else {
          assert.equal(typeof answer.error, "string");
          assert.match(answer.error as string, limit);
          assert.ok((answer.error as string).includes(`at ${at}`), answer.error as string);
        }
      });
    }

    it("tool call arguments as JSON text (which the engine parses and renders): 400 naming them, on both APIs", async () => {
      const deepText = `{"a":${"[".repeat(20_000)}${"]".repeat(20_000)}}`;
      const openAiCall = { role: "assistant" as const, content: null, tool_calls: [{ id: "c1", type: "function" as const, function: { name: "f", arguments: deepText } }] };
      await assert.rejects(
        openai.chat.completions.create({ model: MODEL, max_tokens: 2, messages: [...USER, openAiCall, { role: "tool", tool_call_id: "c1", content: "ok" }] }),
        openAiRefusal("messages[1].tool_calls[0].function.arguments", [/nested deeper than 100 levels/]),
      );
      const ollamaCall = { role: "assistant", content: "", tool_calls: [{ function: { name: "f", arguments: deepText as never } }] };
      await assert.rejects(
        ollama.chat({ model: MODEL, messages: [...USER, ollamaCall, { role: "tool", content: "ok" }], options: { num_predict: 2 } }),
        ollamaRefusal("messages[1].tool_calls[0].function.arguments", [/nested deeper than 100 levels/]),
      );
    });

    it("leaves the model loaded and serving", async () => {
      await assertStillServing();
    });

    it("takes a tool schema at its own 32-level limit", async () => {
      const body = withDeepSchema({ model: MODEL, messages: USER, max_tokens: 2, tools: [{ type: "function", function: { name: "f", parameters: "@deep" } }] }, 32);
      const res = await d.post("/v1/chat/completions", body);
      assert.equal(res.status, 200, await res.clone().text());
    });
  });
});
