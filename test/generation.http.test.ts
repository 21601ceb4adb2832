import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { expectedChatReply, expectedContinuation, SOFT_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import type { GenerationStats } from "../src/machines/runtimeMachine.ts";
import { fixtureModel, slowModel, tinyModel } from "../testing/fixtures.ts";

// Generation as users of Ollama and llama-server expect it: real engine, generated models, real HTTP.

async function errorOf(res: Response): Promise<Record<string, any>> {
  const body = (await res.json()) as Record<string, any>;
  assert.equal(body.success, false);
  return body;
}

/** Reads a streamed body chunk by chunk, as `curl -N` shows it. */
async function chunksOf(res: Response): Promise<string[]> {
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) chunks.push(decoder.decode(part, { stream: true }));
  return chunks;
}

function parseSse(text: string): Array<{ event: string; data: any }> {
  return text
    .split("\n\n")
    .filter((block) => block.trim())
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = JSON.parse(/^data: (.*)$/m.exec(block)![1]);
      return { event, data };
    });
}

describe("generation options on the tiny model", () => {
  let d: TestDaemon;
  before(async () => {
    const [tiny] = await Promise.all([tinyModel(), fixtureModel(SOFT_CHAR_MODEL)]);
    d = await startTestDaemon();
    assert.equal((await d.post("/load_model", { path: tiny })).status, 200);
  });
  after(() => d?.close());

  it("wraps the prompt in the model's chat template by default, with an optional system message", async () => {
    const chat = await d.post("/run_prompt", { prompt: "Explain recursion", max_tokens: 12 });
    assert.equal(await chat.text(), expectedChatReply(12), "the reply to a ChatML prompt ending in a newline");
    const chatTokens = Number(chat.headers.get("x-prompt-tokens"));
    const raw = await d.post("/run_prompt", { prompt: "Explain recursion", raw: true, max_tokens: 12 });
    assert.equal(await raw.text(), expectedContinuation("Explain recursion", 12));
    const rawTokens = Number(raw.headers.get("x-prompt-tokens"));
    // ChatML: BOS <|im_start|> "user" \n …prompt… <|im_end|> \n <|im_start|> "assistant" \n
    assert.equal(chatTokens, rawTokens + 1 + 4 + 1 + 2 + 1 + 9 + 1);
    const withSystem = await d.post("/run_prompt", { prompt: "Explain recursion", system: "Be brief.", max_tokens: 3 });
    assert.equal(Number(withSystem.headers.get("x-prompt-tokens")), chatTokens + 1 + 6 + 1 + 9 + 2);
    assert.equal(await withSystem.text(), " ab");
  });

  it("streams text/plain chunks that concatenate to the non-streamed text", async () => {
    const whole = await (await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 50 })).text();
    const res = await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 50, stream: true });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    const chunks = await chunksOf(res);
    assert.equal(chunks.join(""), whole);
    assert.equal(whole, expectedContinuation("abc", 50));
    assert.ok(chunks.length > 1, `text arrived in ${chunks.length} chunks`);
  });

  it("streams Server-Sent Events with Accept: text/event-stream, ending with finish reason and counts", async () => {
    const res = await d.post("/run_prompt", { prompt: "xyz", raw: true, max_tokens: 8 }, { accept: "text/event-stream" });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const events = parseSse(await res.text());
    const done = events.pop()!;
    assert.equal(done.event, "done");
    const { cached_tokens: cached, ...counts } = done.data;
    assert.deepEqual(counts, { finish_reason: "length", prompt_tokens: 4, completion_tokens: 8 });
    assert.ok(Number.isInteger(cached) && cached >= 0 && cached < 4, `cached_tokens ${cached}: the last prompt token is always evaluated`);
    assert.ok(events.every((e) => e.event === "message"));
    assert.equal(events.map((e) => e.data.text).join(""), "abcdefgh");
  });

  it("answers a refused streaming request with a JSON error, not a broken stream", async () => {
    const res = await d.post("/run_prompt", { prompt: "a".repeat(3000), raw: true, stream: true });
    assert.equal(res.status, 400);
    assert.equal((await errorOf(res)).code, "PROMPT_TOO_LONG");
  });

  it("ends before a stop string, with finish reason stop", async () => {
    const res = await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 50, stop: ["hij", "zzz"] });
    assert.equal(await res.text(), "defg");
    assert.equal(res.headers.get("x-finish-reason"), "stop");
  });

  it("constrains the output to a JSON schema", async () => {
    const schema = {
      type: "object",
      properties: { answer: { enum: ["yes", "no"] }, sure: { type: "boolean" }, tags: { type: "array", items: { const: "x" }, maxItems: 2 } },
      required: ["answer", "sure"],
      additionalProperties: false,
    };
    const res = await d.post("/run_prompt", { prompt: "Is this JSON?", json_schema: schema, max_tokens: 200 });
    assert.equal(res.status, 200);
    const value = JSON.parse(await res.text());
    assert.ok(["yes", "no"].includes(value.answer));
    assert.equal(typeof value.sure, "boolean");
    assert.ok(Object.keys(value).every((k) => k in schema.properties));
  });

  it("refuses an unsupported JSON schema with 400 and the reason", async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ type: "foo" }, /type must be one of/],
      [{ type: "string", pattern: "^a+$" }, /keyword "pattern" is not supported for type "string" at #\/pattern/],
      [{ type: "object", properties: { a: { $ref: "#/definitions/x" } } }, /references/],
      ["not a schema", /must be an object/],
    ];
    for (const [schema, reason] of cases) {
      const res = await d.post("/run_prompt", { prompt: "x", json_schema: schema });
      assert.equal(res.status, 400);
      const body = await errorOf(res);
      assert.equal(body.field, "json_schema");
      assert.match(body.message, reason);
    }
  });

  it("validates every sampling option and names the field", async () => {
    const cases: Array<[string, unknown]> = [
      ["temperature", -1],
      ["temperature", "hot"],
      ["top_k", 1.5],
      ["top_p", 2],
      ["min_p", -0.1],
      ["repeat_penalty", 0],
      ["seed", -1],
      ["seed", 1e300],
      ["max_tokens", 0],
      ["stop", "".padEnd(300, "x")],
      ["stop", [1, 2]],
      ["raw", "yes"],
      ["stream", 1],
      ["system", 42],
    ];
    for (const [field, value] of cases) {
      const res = await d.post("/run_prompt", { prompt: "x", [field]: value });
      assert.equal(res.status, 400, `${field}: ${JSON.stringify(value)}`);
      const body = await errorOf(res);
      assert.equal(body.field, field);
      assert.match(body.message, new RegExp(`"${field}"`));
    }
    assert.equal((await d.status()).state, "idle");
  });

  describe("seeded sampling", () => {
    before(async () => {
      assert.equal((await d.post("/load_model", { path: await fixtureModel(SOFT_CHAR_MODEL) })).status, 200);
    });
    const sample = async (seed: number) => {
      const body = { prompt: "abc", raw: true, max_tokens: 24, temperature: 1, top_k: 0, top_p: 1, min_p: 0, seed };
      return (await d.post("/run_prompt", body)).text();
    };

    it("gives the same text for the same seed, prompt and model, and other text for other seeds", async () => {
      const first = await sample(7);
      assert.equal(await sample(7), first);
      assert.equal(await sample(7), first);
      const others = new Set([await sample(8), await sample(9), await sample(10)]);
      assert.ok([...others].some((t) => t !== first), "sampling really samples");
    });

    it("is still greedy-exact with temperature 0", async () => {
      const text = await (await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 10, temperature: 0 })).text();
      assert.equal(text, "defghijklm");
    });
  });

  it("unloads the model on request, and says when there was none", async () => {
    const res = await d.post("/unload_model");
    assert.deepEqual(await res.json(), { success: true, unloaded: true, message: "Model unloaded" });
    const status = await d.status();
    assert.equal(status.state, "empty");
    assert.equal(status.model_loaded, false);
    assert.deepEqual(await (await d.post("/unload_model")).json(), { success: true, unloaded: false, message: "No model was loaded" });
    assert.equal((await errorOf(await d.post("/run_prompt", { prompt: "x" }))).code, "NO_MODEL");
  });

  it("loads with a given context size and thread count, shown in /status", async () => {
    const res = await d.post("/load_model", { path: await tinyModel(), context_size: 256, threads: 1 });
    const body = (await res.json()) as Record<string, any>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.model.context_size, 256);
    const status = await d.status();
    assert.equal(status.context_size, 256);
    assert.equal(status.threads, 1);
    assert.equal(status.gpu, false);
    assert.equal(status.queue_length, 0);
    const tooLong = await d.post("/run_prompt", { prompt: "a".repeat(300), raw: true });
    assert.match((await errorOf(tooLong)).message, /301 tokens but the context holds 256/);
    for (const [field, value] of [["context_size", 8], ["threads", 0], ["gpu_layers", -1]] as const) {
      const bad = await d.post("/load_model", { path: await tinyModel(), [field]: value });
      assert.equal(bad.status, 400);
      assert.equal((await errorOf(bad)).field, field);
    }
  });

  it("reports the last generation's figures in /status", async () => {
    await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 100 });
    const g = (await d.status()).generation;
    assert.equal(g.running, false);
    assert.equal(g.tokens, 100);
    assert.equal(g.prompt_tokens, 4);
    assert.equal(g.finish_reason, "length");
    assert.ok(g.tokens_per_s > 0, `tokens_per_s ${g.tokens_per_s}`);
    assert.ok(g.time_to_first_token_ms > 0 && g.time_to_first_token_ms < g.elapsed_ms, `first token after ${g.time_to_first_token_ms} ms of ${g.elapsed_ms}`);
  });
});

describe("several clients on the slow model", () => {
  let d: TestDaemon;
  before(async () => {
    const slow = await slowModel();
    d = await startTestDaemon({ maxQueue: 3 });
    assert.equal((await d.post("/load_model", { path: slow })).status, 200);
  });
  after(() => d?.close());

  // The pending response is wrapped: an async function returning a bare promise would wait for it.
  /** Starts a long generation and waits until it runs. */
  async function longRun(signal?: AbortSignal): Promise<{ response: Promise<Response> }> {
    const response = d.post("/run_prompt", { prompt: "The quick brown fox", raw: true, max_tokens: 4000 }, {}, signal);
    response.catch(() => {});
    await waitUntil(async () => (await d.status()).state === "generating", 10_000, "generating");
    return { response };
  }
  async function enqueue(prompt: string, maxTokens: number, signal?: AbortSignal): Promise<{ response: Promise<Response> }> {
    const before = (await d.status()).queue_length;
    const response = d.post("/run_prompt", { prompt, raw: true, max_tokens: maxTokens }, {}, signal);
    response.catch(() => {});
    await waitUntil(async () => (await d.status()).queue_length === before + 1, 10_000, `${prompt} queued`);
    return { response };
  }

  it("serves queued clients in order, each its own text, none lost or duplicated", async () => {
    const first = await longRun();
    const prompts = ["a", "K", "5"];
    const finished: string[] = [];
    const queued = [];
    for (const p of prompts) {
      const pending = (await enqueue(p, 6)).response;
      queued.push(pending.then(async (res) => ({ prompt: p, text: await res.text(), status: res.status })).finally(() => finished.push(p)));
    }
    assert.equal((await d.status()).queue_length, 3);
    assert.deepEqual(await (await d.post("/stop")).json(), { stopped: true, dropped: 0 });
    assert.equal((await first.response).headers.get("x-finish-reason"), "cancelled");
    const results = await Promise.all(queued);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.text, expectedContinuation(r.prompt, 6));
    }
    assert.deepEqual(finished, prompts, "first in, first out");
    assert.equal((await d.status()).state, "idle");
  });

  it("answers 503 with Retry-After when the queue is full", async () => {
    const first = await longRun();
    const waiting = [await enqueue("a", 3), await enqueue("b", 3), await enqueue("c", 3)];
    const full = await d.post("/run_prompt", { prompt: "d", raw: true });
    assert.equal(full.status, 503);
    assert.ok(Number(full.headers.get("retry-after")) >= 1);
    const body = await errorOf(full);
    assert.equal(body.code, "QUEUE_FULL");
    assert.match(body.message, /queue is full \(3 requests waiting\)/);

    // /stop {"all": true} cancels the running one and answers every waiting client at once.
    assert.deepEqual(await (await d.post("/stop", { all: true })).json(), { stopped: true, dropped: 3 });
    assert.equal((await first.response).status, 200);
    for (const res of await Promise.all(waiting.map((w) => w.response))) {
      assert.equal(res.status, 503);
      assert.equal((await errorOf(res)).code, "QUEUE_CLEARED");
    }
    assert.equal((await d.status()).queue_length, 0);
  });

  it("stops one request by its X-Request-Id, running or waiting, and no other", async () => {
    const running = d.post("/run_prompt", { prompt: "The quick brown fox", raw: true, max_tokens: 4000 }, { "X-Request-Id": "mine-1" });
    await waitUntil(async () => (await d.status()).state === "generating", 10_000, "generating");
    const waiting = d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5 }, { "X-Request-Id": "mine-2" });
    const other = d.post("/run_prompt", { prompt: "K", raw: true, max_tokens: 5 });
    await waitUntil(async () => (await d.status()).queue_length === 2, 10_000, "two waiting");
    assert.deepEqual(await (await d.post("/stop", { id: "nope" })).json(), { stopped: false, dropped: 0 });
    assert.deepEqual(await (await d.post("/stop", { id: "mine-2" })).json(), { stopped: false, dropped: 1 });
    assert.equal((await errorOf(await waiting)).code, "QUEUE_CLEARED");
    assert.deepEqual(await (await d.post("/stop", { id: "mine-1" })).json(), { stopped: true, dropped: 0 });
    const first = await running;
    assert.equal(first.headers.get("x-request-id"), "mine-1");
    assert.equal(first.headers.get("x-finish-reason"), "cancelled");
    const third = await other;
    assert.equal(await third.text(), "LMNOP", "the request nobody named ran to its end");
    assert.match(third.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/, "a request without an id gets one");
    assert.equal((await errorOf(await d.post("/stop", { id: "bad id!" }))).field, "id");
  });

  it("cancels a generation whose client disconnects, and starts the next queued one", async () => {
    const client = new AbortController();
    const first = await longRun(client.signal);
    const next = await enqueue("abc", 5);
    const ended: GenerationStats[] = [];
    const unsubscribe = d.feed.subscribe((e) => e.type === "generation" && ended.push(e.stats));
    const abortedAt = performance.now();
    client.abort();
    await assert.rejects(first.response);
    const res = await next.response;
    assert.equal(await res.text(), "defgh");
    // Left running, the first request had ~4000 tokens (tens of seconds) to go.
    assert.ok(performance.now() - abortedAt < 5_000, "the next request started at once");
    const status = await d.status();
    assert.equal(status.state, "idle");
    const cancelled = d.logs.lines.filter((l) => l.event === "request" && l.path === "/run_prompt" && l.aborted === true);
    assert.ok(cancelled.length >= 1, "the request log shows the aborted request");
    unsubscribe();
    assert.equal(ended[0]?.finishReason, "cancelled", "the disconnected client's generation was stopped");
    assert.ok(ended[0].completionTokens < 4000, `stopped after ${ended[0].completionTokens} of 4000 tokens`);
  });

  it("drops a queued request whose client disconnects", async () => {
    const first = await longRun();
    const client = new AbortController();
    const gone = await enqueue("abc", 5, client.signal);
    const stays = await enqueue("xyz", 3);
    client.abort();
    await assert.rejects(gone.response);
    await waitUntil(async () => (await d.status()).queue_length === 1, 5_000, "queue back to 1");
    await d.post("/stop");
    await first.response;
    assert.equal(await (await stays.response).text(), "abc");
  });

  it("refuses load and unload while generating, never half-applied", async () => {
    const first = await longRun();
    for (const [path, body] of [["/load_model", { path: await tinyModel() }], ["/unload_model", undefined]] as const) {
      const res = await d.post(path, body);
      assert.equal(res.status, 409);
      assert.match((await errorOf(res)).message, /POST \/stop first/);
    }
    const status = await d.status();
    assert.equal(status.state, "generating");
    assert.equal(status.model.name, "kekahyde-char-slow");
    assert.equal(status.generation.running, true);
    await d.post("/stop");
    await first.response;
  });
});
