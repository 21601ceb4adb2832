import assert from "node:assert/strict";
import { basename } from "node:path";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { expectedChatReply, expectedContinuation } from "../src/gguf/charModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "../testing/fixtures.ts";

// The official openai client against the daemon: real client, real HTTP, real engine.

describe("OpenAI-compatible API with the official openai client", () => {
  let d: TestDaemon;
  let client: OpenAI;
  before(async () => {
    d = await startTestDaemon({ apiKey: "sk-local" });
    client = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "sk-local", maxRetries: 0 });
  });
  after(() => d?.close());

  it("reports errors in OpenAI's shape: a chat with no model loaded", async () => {
    await assert.rejects(
      client.chat.completions.create({ model: "any", messages: [{ role: "user", content: "hi" }] }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.APIError);
        assert.equal(e.status, 409);
        assert.equal(e.code, "no_model");
        assert.match(e.message, /load_model/);
        return true;
      },
    );
  });

  it("refuses a wrong API key the way OpenAI does", async () => {
    const wrong = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
  });

  it("lists the loaded model under its name (the file name without .gguf)", async () => {
    const path = await tinyModel();
    await d.post("/load_model", { path }, { authorization: "Bearer sk-local" });
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [basename(path, ".gguf")]);
  });

  it("answers a chat completion with the model's exact reply and usage", async () => {
    const r = await client.chat.completions.create({
      model: "kekahyde-char-tiny",
      messages: [
        { role: "system", content: "You are terse." },
        { role: "user", content: "Explain recursion" },
      ],
      max_tokens: 15,
      temperature: 0,
      seed: 1,
    });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices[0].message.role, "assistant");
    assert.equal(r.choices[0].message.content, expectedChatReply(15));
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage?.completion_tokens, 15);
    assert.ok((r.usage?.prompt_tokens ?? 0) > 20);
  });

  it("streams a chat completion whose deltas make the same text", async () => {
    const stream = await client.chat.completions.create({
      model: "kekahyde-char-tiny",
      messages: [{ role: "user", content: "Explain recursion" }],
      max_tokens: 30,
      temperature: 0,
      stream: true,
    });
    let text = "";
    let chunks = 0;
    let finish: string | null = null;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, expectedChatReply(30));
    assert.equal(finish, "length");
    assert.ok(chunks > 2);
  });

  it("answers a multi-turn conversation (history in the template)", async () => {
    const r = await client.chat.completions.create({
      model: "kekahyde-char-tiny",
      messages: [
        { role: "user", content: "hello" },
        { role: "assistant", content: "hi" },
        { role: "user", content: "and?" },
      ],
      max_tokens: 4,
      temperature: 0,
    });
    assert.equal(r.choices[0].message.content, " abc");
  });

  it("answers a text completion, streaming and not, with stop strings", async () => {
    const r = await client.completions.create({ model: "kekahyde-char-tiny", prompt: "abc", max_tokens: 10, temperature: 0, stop: ["jk"] });
    assert.equal(r.choices[0].text, "defghi");
    assert.equal(r.choices[0].finish_reason, "stop");
    const defaultLength = await client.completions.create({ model: "kekahyde-char-tiny", prompt: "abc", temperature: 0 });
    assert.equal(defaultLength.choices[0].text, expectedContinuation("abc", 16), "OpenAI's default of 16 tokens");
    const stream = await client.completions.create({ model: "kekahyde-char-tiny", prompt: "xyz", max_tokens: 6, temperature: 0, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, "abcdef");
  });

  it("constrains a chat reply with response_format json_schema", async () => {
    const r = await client.chat.completions.create({
      model: "kekahyde-char-tiny",
      messages: [{ role: "user", content: "Answer in JSON" }],
      max_tokens: 100,
      response_format: {
        type: "json_schema",
        json_schema: { name: "answer", schema: { type: "object", properties: { ok: { type: "boolean" }, word: { enum: ["yes", "no"] } }, required: ["ok", "word"] } },
      },
    });
    const value = JSON.parse(r.choices[0].message.content ?? "");
    assert.equal(typeof value.ok, "boolean");
    assert.ok(["yes", "no"].includes(value.word));
  });

  it("refuses what it cannot do with a 400 naming the parameter", async () => {
    await assert.rejects(
      client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], n: 2 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "n",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 21 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "top_logprobs",
    );
  });

  it("cancels a streaming chat when the client aborts it", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: "m", messages: [{ role: "user", content: "go" }], temperature: 0, stream: true },
      { signal: controller.signal },
    );
    let got = 0;
    try {
      for await (const _ of stream) {
        if (++got < 3) continue;
        controller.abort();
        // Chunks that arrived in the same read as the third are already buffered in the SDK: not read.
        break;
      }
    } catch {
      // The SDK may end the iteration or throw an abort error; either way the client is gone.
    }
    const status = async () => (await (await fetch(`${d.url}/status`, { headers: { authorization: "Bearer sk-local" } })).json()) as { state: string; generation: { finish_reason: string } };
    await waitUntil(async () => (await status()).state === "idle", 2_000, "the cancelled generation to end");
    assert.equal(got, 3);
    const final = await status();
    assert.equal(final.state, "idle");
    assert.equal(final.generation.finish_reason, "cancelled");
  });
});
