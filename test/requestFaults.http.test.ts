import assert from "node:assert/strict";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { charModelSpec } from "../src/gguf/charModel.ts";
import { CRAFTED_BASE, withMetadata } from "../testing/gguf/craftedModels.ts";
import { str, writeGguf } from "../src/gguf/writer.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { FIXTURES, tinyModel } from "../testing/fixtures.ts";

/**
 * A client's request must never take a model away from everyone (issue 21): what only that request got wrong
 * is a 400 in its API's own shape, and the model stays loaded, in the same engine process, serving the rest.
 */

/**
 * Mistral's rule, word for word as its template raises it, in a turn format node-llama-cpp has no wrapper of
 * its own for (for ChatML, Mistral's or Gemma's own layout it uses its built-in wrapper and never renders the
 * template), so the template itself renders every conversation, as it does for many models.
 */
const ALTERNATING_TEMPLATE =
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{{ '### ' + message['role'] + ':\n' + message['content'] + '\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}";

/** An assistant turn first: out of turn for the template (node-llama-cpp merges two user turns in a row into one). */
const OUT_OF_TURN = [
  { role: "assistant" as const, content: "hello" },
  { role: "user" as const, content: "hi" },
];

async function alternatingModel(): Promise<string> {
  const dir = join(FIXTURES, "request-faults");
  await mkdir(dir, { recursive: true });
  const path = join(dir, "alternating.gguf");
  await writeGguf(path, withMetadata(charModelSpec(CRAFTED_BASE), "tokenizer.chat_template", str(ALTERNATING_TEMPLATE)));
  return path;
}

describe("a chat template that refuses a conversation", () => {
  let d: TestDaemon;
  const model = "alternating";
  const enginePid = async () => (await d.status()).models.find((m: { name: string }) => m.name === model)?.engine_pid as number | undefined;
  before(async () => {
    d = await startTestDaemon({ keepAliveMs: -1 });
    assert.equal((await d.post("/load_model", { path: await alternatingModel(), name: model })).status, 200);
  });
  after(() => d?.close());

  it("answers 400 with the template's words in OpenAI's and Ollama's shapes, and the model keeps serving", async () => {
    const pid = await enginePid();
    assert.ok(pid);
    const openai = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "x", maxRetries: 0 });
    await assert.rejects(openai.chat.completions.create({ model, messages: OUT_OF_TURN, max_tokens: 3 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.APIError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.code, "bad_request");
      assert.match(e.message, /chat template refused this conversation: Conversation roles must alternate user\/assistant/);
      return true;
    });
    const ollama = new Ollama({ host: d.url });
    await assert.rejects(ollama.chat({ model, messages: OUT_OF_TURN, stream: false }), (e: unknown) => {
      assert.equal((e as { status_code?: number }).status_code, 400, String(e));
      assert.match((e as Error).message, /Conversation roles must alternate/);
      return true;
    });
    const seed = await d.post("/run_prompt", { model, messages: OUT_OF_TURN });
    assert.equal(seed.status, 400);
    const status = await d.status();
    assert.equal(status.models.length, 1, "the model is still loaded");
    assert.equal(await enginePid(), pid, "in the same engine process");
    const good = await openai.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
    assert.match(good.choices[0].message.content ?? "", /^ ?abc$/);
  });
});

describe('"truncate": true with a very long conversation', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ contextSize: 2048, maxFirstTokenSeconds: 20, keepAliveMs: -1, maxBodyBytes: 4 * 1024 * 1024 });
    assert.equal((await d.post("/load_model", { path: await tinyModel(), name: "tiny" })).status, 200);
  });
  after(() => d?.close());

  it("fits 20,000 turns (1.2 MB) into a 2,048-token context at once, and keeps the model", async () => {
    const messages = Array.from({ length: 20_000 }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: `turn ${String(i).padStart(6, "0")} ${"x".repeat(24)}` }));
    messages.push({ role: "user", content: "last" });
    const body = JSON.stringify({ model: "tiny", messages, truncate: true, max_tokens: 3 });
    assert.ok(body.length > 750_000, `${body.length} bytes`);
    const pid = (await d.status()).models[0].engine_pid;
    const started = performance.now();
    const res = await d.post("/v1/chat/completions", body);
    const took = performance.now() - started;
    const answer = (await res.json()) as { choices: Array<{ message: { content: string } }>; truncated_messages: number; usage: { prompt_tokens: number } };
    assert.equal(res.status, 200, JSON.stringify(answer).slice(0, 300));
    assert.ok(answer.truncated_messages > 19_000, `${answer.truncated_messages} turns dropped`);
    assert.ok(answer.usage.prompt_tokens < 2048 && answer.usage.prompt_tokens > 1500, `${answer.usage.prompt_tokens} prompt tokens: the fewest turns dropped`);
    // Dropping one turn at a time (rendering 20,000 turns again each time) ran past the first-token limit.
    assert.ok(took < 5_000, `answered in ${took.toFixed(0)} ms`);
    assert.equal((await d.status()).models[0].engine_pid, pid, "the same engine process");
  });
});

describe("--max-queue 0 and a model loaded on first use", () => {
  let d: TestDaemon;
  const dir = join(FIXTURES, "max-queue-0-models");
  before(async () => {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await copyFile(await tinyModel(), join(dir, "first.gguf"));
    d = await startTestDaemon({ maxQueue: 0, parallel: 2, modelsDirs: [dir] });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves the requests that cause the load (up to --parallel of them) and refuses more with 503", async () => {
    const ask = () => d.post("/api/generate", { model: "first", prompt: "abc", raw: true, stream: false, options: { num_predict: 3 } });
    const answers = await Promise.all([ask(), ask(), ask()]);
    const statuses = answers.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 503], "two wait for the load they caused, a third finds no room");
    for (const r of answers.filter((a) => a.status === 200)) assert.equal(((await r.json()) as { response: string }).response, "def");
    const refused = answers.find((r) => r.status === 503)!;
    assert.match(((await refused.json()) as { error: string }).error, /loading and enough requests already wait/);
    await waitUntil(async () => (await d.status()).models[0]?.state === "idle", 5_000, "idle");
  });
});
