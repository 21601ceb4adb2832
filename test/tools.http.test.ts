import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import type { ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { LLAMA31_FLAVOUR, QWEN25_FLAVOUR } from "../testing/gguf/toolModel.ts";
import { pairToolCalls } from "../src/server/tools.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "../testing/fixtures.ts";
import { toolModel } from "./helpers/toolModels.ts";

/**
 * Tool calls with the official openai and ollama clients against the real daemon and engine, on generated
 * models whose GGUF carries the real Qwen 2.5 and Llama 3.1 chat templates (testing/gguf/toolModel.ts): node-llama-cpp
 * resolves its Jinja wrapper (function-call syntax read from the Qwen template) and its Llama 3.1 wrapper. The
 * model writes " abc…xyz" and then starts a call of its own; the grammars decide the call's name and arguments.
 */

/** A JSON schema validator for the subset the tests' tools use; returns what is wrong, or null. */
function invalid(value: unknown, schema: Record<string, any>, at = "#"): string | null {
  if (schema.enum) return schema.enum.includes(value) ? null : `${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`;
  switch (schema.type) {
    case "boolean":
      return typeof value === "boolean" ? null : `${at}: not a boolean`;
    case "string":
      if (typeof value !== "string") return `${at}: not a string`;
      return schema.maxLength !== undefined && value.length > schema.maxLength ? `${at}: longer than ${schema.maxLength}` : null;
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) return `${at}: not an object`;
      const v = value as Record<string, unknown>;
      for (const key of schema.required ?? []) if (!(key in v)) return `${at}: "${key}" is missing`;
      for (const [key, item] of Object.entries(v)) {
        const sub = schema.properties?.[key];
        if (!sub) {
          if (schema.additionalProperties === false) return `${at}: "${key}" is not allowed`;
          continue;
        }
        const problem = invalid(item, sub, `${at}/${key}`);
        if (problem) return problem;
      }
      return null;
    }
    default:
      return `${at}: the validator does not know ${JSON.stringify(schema)}`;
  }
}

const WEATHER_PARAMS = {
  type: "object",
  properties: {
    city: { type: "string", enum: ["Paris", "Lima", "Oslo"] },
    unit: { enum: ["celsius", "fahrenheit"] },
    detailed: { type: "boolean" },
    note: { type: "string", maxLength: 6 },
  },
  required: ["city", "unit"],
  additionalProperties: false,
};
const TOOLS: ChatCompletionTool[] = [
  { type: "function", function: { name: "get_weather", description: "The weather in a city now", parameters: WEATHER_PARAMS } },
  { type: "function", function: { name: "get_time", description: "The time now" } },
];
const SCHEMAS: Record<string, Record<string, any>> = { get_weather: WEATHER_PARAMS, get_time: { type: "object", properties: {}, additionalProperties: false } };
/** The model's own reply before it calls a tool (the Jinja wrapper trims the leading space). */
const ALPHABET = "abcdefghijklmnopqrstuvwxyz";
/** The reply in `tokens` tokens: the first is the space the Jinja wrapper trims. */
const reply = (tokens: number) => ALPHABET.slice(0, tokens - 1);

/** Asserts an OpenAI tool call names one of the tools and carries arguments valid against its schema. */
function assertValidCall(call: { id: string; type: string; function: { name: string; arguments: string } }, names = Object.keys(SCHEMAS)): Record<string, unknown> {
  assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
  assert.equal(call.type, "function");
  assert.ok(names.includes(call.function.name), call.function.name);
  const args = JSON.parse(call.function.arguments);
  assert.equal(invalid(args, SCHEMAS[call.function.name]), null, call.function.arguments);
  return args;
}

const badRequest = (param: string, message?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof OpenAI.BadRequestError, String(e));
  assert.equal((e.error as { param?: string }).param, param, e.message);
  if (message) assert.match(e.message, message);
  return true;
};

describe("Pairing tool results with their calls", () => {
  const calls = [
    { name: "get_weather", arguments: '{"city":"Oslo"}' },
    { name: "get_time", arguments: "{}" },
  ];
  const ids = (messages: ReturnType<typeof pairToolCalls>) => messages.filter((m) => m.role === "tool").map((m) => [m.content, m.toolCallId]);

  it("by id (OpenAI), by tool_name, else in order (Ollama); calls get ids unique in the conversation", () => {
    const withIds = pairToolCalls([
      { role: "user", content: "q" },
      { role: "assistant", content: "", calls: calls.map((c, i) => ({ ...c, id: `c${i}` })) },
      { role: "tool", content: "noon", callId: "c1" },
      { role: "tool", content: "cold", callId: "c0" },
      { role: "assistant", content: "", calls: [{ ...calls[1], id: "c0" }] },
      { role: "tool", content: "later", callId: "c0" },
    ]);
    assert.deepEqual(ids(withIds), [["noon", "call_1_1"], ["cold", "call_1_0"], ["later", "call_4_0"]]);
    assert.deepEqual(withIds[1].toolCalls?.map((c) => c.id), ["call_1_0", "call_1_1"]);
    const byName = pairToolCalls([{ role: "user", content: "q" }, { role: "assistant", content: "", calls }, { role: "tool", content: "noon", toolName: "get_time" }, { role: "tool", content: "cold" }]);
    assert.deepEqual(ids(byName), [["noon", "call_1_1"], ["cold", "call_1_0"]]);
  });
});

describe("Tool calls", () => {
  let d: TestDaemon;
  let dir: string;
  let openai: OpenAI;
  let ollama: Ollama;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-tools-"));
    await copyFile(await toolModel(QWEN25_FLAVOUR), join(dir, "qwen-tools.gguf"));
    await copyFile(await toolModel(LLAMA31_FLAVOUR), join(dir, "llama-tools.gguf"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    // A spare engine process, so that each of the three loads finds its process started.
    d = await startTestDaemon({ modelsDirs: [dir], maxModels: 3, spareEngine: true });
    openai = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "unused", maxRetries: 0 });
    ollama = new Ollama({ host: d.url });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("says which models call tools: those whose chat template renders tools", async () => {
    const listed = (await openai.models.list()).data as unknown as Array<{ id: string; capabilities: string[] }>;
    const capabilities = Object.fromEntries(listed.map((m) => [m.id, m.capabilities]));
    assert.deepEqual(capabilities, { "llama-tools": ["completion", "tools"], "qwen-tools": ["completion", "tools"], tiny: ["completion"] });
    assert.deepEqual((await ollama.show({ model: "qwen-tools" })).capabilities, ["completion", "tools"]);
    assert.deepEqual((await ollama.show({ model: "tiny" })).capabilities, ["completion"]);
  });

  it('tool_choice "required": a call whose arguments are valid against its schema, sampled or greedy', async () => {
    for (const sampling of [{ temperature: 0 }, { seed: 1 }, { seed: 2, temperature: 1.5 }]) {
      const r = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Weather in Paris?" }], tools: TOOLS, tool_choice: "required", ...sampling });
      const choice = r.choices[0];
      assert.equal(choice.finish_reason, "tool_calls");
      assert.equal(choice.message.content, null);
      assert.equal(choice.message.tool_calls?.length, 1);
      assertValidCall(choice.message.tool_calls[0] as never);
      assert.ok((r.usage?.completion_tokens ?? 0) > 5, "the call's tokens are counted");
    }
  });

  it("a named function is the one called, with or without parameters", async () => {
    const time = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Time?" }], tools: TOOLS, tool_choice: { type: "function", function: { name: "get_time" } } });
    assert.equal((time.choices[0].message.tool_calls![0] as { function: { name: string } }).function.name, "get_time");
    assert.equal((time.choices[0].message.tool_calls![0] as { function: { arguments: string } }).function.arguments, "{}");
    const weather = await openai.chat.completions.create({
      model: "qwen-tools",
      messages: [{ role: "user", content: "Weather?" }],
      tools: TOOLS,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      parallel_tool_calls: false,
      // Greedy, the model would pick get_time among both (names tie; see the test above): get_weather is the choice's doing.
      temperature: 0,
    });
    assert.deepEqual(Object.keys(assertValidCall(weather.choices[0].message.tool_calls![0] as never, ["get_weather"])), ["city", "unit", "detailed", "note"]);
  });

  it('"auto": the model writes text, and calls a tool when it chooses to', async () => {
    const short = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Hi" }], tools: TOOLS, max_tokens: 10 });
    assert.equal(short.choices[0].message.content, reply(10));
    assert.equal(short.choices[0].message.tool_calls, undefined);
    assert.equal(short.choices[0].finish_reason, "length");
    const long = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Hi" }], tools: TOOLS, tool_choice: "auto", max_tokens: 200 });
    assert.equal(long.choices[0].finish_reason, "tool_calls");
    assert.equal(long.choices[0].message.content, ALPHABET, "the text before the call");
    assertValidCall(long.choices[0].message.tool_calls![0] as never);
  });

  it('"none": no call and no tools in the prompt', async () => {
    const ask = (tool_choice: "none" | "auto") => openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Hi" }], tools: TOOLS, tool_choice, max_tokens: 30 });
    const [none, auto] = [await ask("none"), await ask("auto")];
    assert.equal(none.choices[0].message.tool_calls, undefined);
    assert.equal(none.choices[0].finish_reason, "length");
    assert.ok(none.choices[0].message.content!.startsWith(ALPHABET), "what the model writes, its attempt at a call as plain text");
    assert.ok(none.usage!.prompt_tokens + 200 < auto.usage!.prompt_tokens, `${none.usage!.prompt_tokens} vs ${auto.usage!.prompt_tokens}`);
  });

  it("streams tool calls as OpenAI does: index, id, type and name, then the arguments", async () => {
    const stream = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Hi" }], tools: TOOLS, stream: true, temperature: 0 });
    let text = "";
    let finish: string | null = null;
    const calls: Array<{ id: string; type: string; function: { name: string; arguments: string } }> = [];
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      text += choice.delta.content ?? "";
      for (const t of choice.delta.tool_calls ?? []) {
        if (t.id) calls[t.index] = { id: t.id, type: t.type!, function: { name: t.function!.name!, arguments: "" } };
        calls[t.index].function.arguments += t.function?.arguments ?? "";
      }
      finish = choice.finish_reason ?? finish;
    }
    assert.equal(text, ALPHABET);
    assert.equal(calls.length, 1);
    assertValidCall(calls[0]);
    assert.equal(finish, "tool_calls");
  });

  it("a full round trip: call, tool result, answer; the result is in the prompt", async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
    const first = await openai.chat.completions.create({ model: "qwen-tools", messages, tools: TOOLS, tool_choice: "required" });
    const call = first.choices[0].message.tool_calls![0];
    messages.push(first.choices[0].message);
    const answer = async (result: string) =>
      openai.chat.completions.create({ model: "qwen-tools", messages: [...messages, { role: "tool", tool_call_id: call.id, content: result }], tools: TOOLS, max_tokens: 12, temperature: 0 });
    const [sunny, longer] = [await answer("sunny"), await answer("sunny and warm")];
    assert.equal(sunny.choices[0].message.content, reply(12));
    assert.equal(sunny.choices[0].finish_reason, "length");
    assert.equal(longer.usage!.prompt_tokens - sunny.usage!.prompt_tokens, " and warm".length, "one token a character of the result");
    // The conversation goes on after the answer.
    const next = await openai.chat.completions.create({
      model: "qwen-tools",
      messages: [...messages, { role: "tool", tool_call_id: call.id, content: "sunny" }, sunny.choices[0].message, { role: "user", content: "Thanks" }],
      tools: TOOLS,
      max_tokens: 5,
    });
    assert.equal(next.choices[0].message.content, reply(5));
  });

  it("a conversation may end on an assistant message: the reply continues it", async () => {
    const r = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "Go on" }, { role: "assistant", content: "The letters abc" }], max_tokens: 5 });
    assert.equal(r.choices[0].message.content, "defgh");
  });

  it("calls tools in Llama 3.1's syntax too (node-llama-cpp's Llama 3.1 wrapper)", async () => {
    const r = await openai.chat.completions.create({ model: "llama-tools", messages: [{ role: "user", content: "Weather?" }], tools: TOOLS, tool_choice: "required", seed: 3 });
    const call = r.choices[0].message.tool_calls![0];
    assertValidCall(call as never);
    const after = await openai.chat.completions.create({
      model: "llama-tools",
      messages: [{ role: "user", content: "Weather?" }, r.choices[0].message, { role: "tool", tool_call_id: call.id, content: '{"sky": "clear"}' }],
      tools: TOOLS,
      max_tokens: 4,
    });
    assert.equal(after.choices[0].message.content, " abc");
  });

  it("takes agents' tool schemas with bounds, patterns and formats a grammar cannot enforce, and holds calls to the rest", async () => {
    const fetchParams = {
      type: "object",
      properties: {
        url: { type: "string", format: "uri", pattern: "^https?://", maxLength: 12, description: "The page" },
        max_length: { type: "integer", minimum: 1, maximum: 100000, exclusiveMinimum: 0 },
        tags: { type: "array", items: { type: "string", minLength: 1, maxLength: 4 }, uniqueItems: true, maxItems: 2 },
        pattern: { type: "string", maxLength: 4 },
      },
      required: ["url", "max_length", "tags", "pattern"],
      additionalProperties: false,
    };
    const r = await openai.chat.completions.create({
      model: "qwen-tools",
      messages: [{ role: "user", content: "Fetch it" }],
      tools: [{ type: "function", function: { name: "fetch", parameters: fetchParams } }],
      tool_choice: "required",
      temperature: 0,
    });
    const call = r.choices[0].message.tool_calls![0] as { function: { name: string; arguments: string } };
    assert.equal(call.function.name, "fetch");
    const args = JSON.parse(call.function.arguments);
    // A property named like a dropped keyword is still a property.
    assert.deepEqual(Object.keys(args).sort(), ["max_length", "pattern", "tags", "url"]);
    assert.ok(typeof args.url === "string" && args.url.length <= 12, "maxLength is still enforced");
    assert.ok(Number.isInteger(args.max_length));
    assert.ok(Array.isArray(args.tags) && args.tags.every((t: unknown) => typeof t === "string" && t.length >= 1));
  });

  it("ends a call that never ends at max_tokens or the end of the context with finish reason length, and the model stays loaded", async () => {
    const endless = [{ type: "function" as const, function: { name: "fetch", parameters: { type: "object", properties: { url: { type: "string" } }, required: ["url"] } } }];
    const bounded = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "go" }], tools: endless, tool_choice: "required", max_tokens: 40, temperature: 0 });
    assert.equal(bounded.choices[0].finish_reason, "length");
    assert.ok(bounded.usage!.completion_tokens <= 41, `${bounded.usage!.completion_tokens} tokens`);
    // No max_tokens: the room left in the context, which the string argument (the model never closes it) fills.
    const unbounded = await openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "go" }], tools: endless, tool_choice: "required", temperature: 0 });
    assert.equal(unbounded.choices[0].finish_reason, "length");
    const status = await d.status();
    assert.equal(status.models.find((m: { name: string }) => m.name === "qwen-tools")?.state, "idle", "not unloaded as an engine failure");
  });

  it("refuses what it cannot do with a 400 that names the field", async () => {
    const chat = (body: Record<string, unknown>) => openai.chat.completions.create({ model: "qwen-tools", messages: [{ role: "user", content: "x" }], ...body } as never);
    await assert.rejects(
      chat({ tools: [{ type: "function", function: { name: "count", parameters: { type: "object", patternProperties: { "^n": { type: "integer" } } } } }] }),
      badRequest("tools[0].function.parameters", /patternProperties/),
    );
    await assert.rejects(
      chat({ tools: [{ type: "function", function: { name: "count", parameters: { type: "object", allOf: [{ type: "object" }] } } }] }),
      badRequest("tools[0].function.parameters", /allOf/),
    );
    await assert.rejects(chat({ tools: [{ type: "function", function: { name: "f", parameters: { type: "string" } } }] }), badRequest("tools[0].function.parameters", /object schema/));
    await assert.rejects(chat({ tools: [{ type: "function", function: { name: "two words" } }] }), badRequest("tools[0].function.name"));
    await assert.rejects(chat({ tools: TOOLS, tool_choice: { type: "function", function: { name: "nope" } } }), badRequest("tool_choice", /not one of the tools/));
    await assert.rejects(chat({ tool_choice: "required" }), badRequest("tool_choice"));
    await assert.rejects(chat({ tools: TOOLS, response_format: { type: "json_object" } }), badRequest("response_format"));
    await assert.rejects(chat({ functions: [{ name: "f" }] }), badRequest("functions"));
    const call = { id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } };
    await assert.rejects(
      chat({ messages: [{ role: "user", content: "x" }, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: "call_2", content: "noon" }] }),
      badRequest("messages[2].tool_call_id"),
    );
    await assert.rejects(chat({ messages: [{ role: "user", content: "x" }, { role: "assistant", content: null, tool_calls: [call] }] }), badRequest("messages", /result of tool call "call_1"/));
    await assert.rejects(
      chat({ messages: [{ role: "user", content: "x" }, { role: "assistant", content: null, tool_calls: [call] }, { role: "user", content: "y" }] }),
      badRequest("messages[2]", /comes before the result/),
    );
    await assert.rejects(chat({ messages: [{ role: "user", content: "x" }, { role: "tool", tool_call_id: "call_1", content: "noon" }] }), badRequest("messages[1]"));
    // A model whose template has no tool syntax says so.
    await assert.rejects(
      openai.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], tools: TOOLS }),
      badRequest("tools", /cannot call tools: its chat template has no tool syntax/),
    );
    const plain = await openai.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], tools: TOOLS, tool_choice: "none", max_tokens: 3 });
    assert.equal(plain.choices[0].message.content, " ab", '"none" needs no tool syntax');
  });

  describe("with the ollama client", () => {
    const ollamaTools = TOOLS as unknown as Parameters<Ollama["chat"]>[0]["tools"];

    it("returns the model's call in Ollama's shape: arguments as an object", async () => {
      const r = await ollama.chat({ model: "qwen-tools", messages: [{ role: "user", content: "Weather in Oslo?" }], tools: ollamaTools, options: { temperature: 0 } });
      assert.equal(r.message.content, ALPHABET);
      assert.equal(r.done_reason, "stop");
      const [call] = r.message.tool_calls!;
      assert.ok(["get_weather", "get_time"].includes(call.function.name));
      assert.equal(invalid(call.function.arguments, SCHEMAS[call.function.name]), null, JSON.stringify(call.function.arguments));
    });

    it("streams the call in an object of its own before the last one", async () => {
      const parts = [];
      for await (const part of await ollama.chat({ model: "qwen-tools", messages: [{ role: "user", content: "Hi" }], tools: ollamaTools, stream: true })) parts.push(part);
      assert.equal(parts.map((p) => p.message.content).join(""), ALPHABET);
      const withCalls = parts.filter((p) => p.message.tool_calls?.length);
      assert.equal(withCalls.length, 1);
      assert.equal(withCalls[0].done, false);
      assert.equal(parts.at(-1)!.done, true);
    });

    it("a full round trip: the tool result, named by tool_name, is in the prompt and the model answers", async () => {
      const first = await ollama.chat({ model: "qwen-tools", messages: [{ role: "user", content: "Weather in Oslo?" }], tools: ollamaTools });
      const history = [{ role: "user", content: "Weather in Oslo?" }, first.message];
      const answer = (result: string) =>
        ollama.chat({
          model: "qwen-tools",
          messages: [...history, { role: "tool", content: result, tool_name: first.message.tool_calls![0].function.name }],
          tools: ollamaTools,
          options: { num_predict: 8 },
        });
      const short = await answer("cold");
      assert.equal(short.message.content, reply(8));
      assert.equal(short.message.tool_calls, undefined);
      // prompt_eval_count counts what was evaluated, as Ollama's (the rest is in the prompt cache): after the short
      // conversation the long one evaluates " and windy" and the template's tail; after the long one, the short
      // one again evaluates the tail only.
      const long = await answer("cold and windy");
      const shortAgain = await answer("cold");
      assert.equal(long.prompt_eval_count - shortAgain.prompt_eval_count, " and windy".length);
    });

    it("answers tools for a model without tool syntax with a 400 that says so", async () => {
      await assert.rejects(ollama.chat({ model: "tiny", messages: [{ role: "user", content: "x" }], tools: ollamaTools }), (e: Error & { status_code?: number }) => {
        assert.equal(e.status_code, 400);
        assert.match(e.message, /chat template has no tool syntax/);
        return true;
      });
    });
  });
});
