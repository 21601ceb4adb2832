import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { expectedChatReply, expectedContinuation } from "../src/gguf/charModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { skipModel, slowModel, tinyModel } from "../testing/fixtures.ts";

/**
 * Several models at once, through HTTP with the real engine: routing by name, the default model, LRU
 * eviction, busy models never evicted, the memory budget, keep-alive and parallel slots. The two generated
 * models write different exact texts: "abc" continues letters one by one, "ace" skips every other letter.
 */

const json = async (res: Response) => (await res.json()) as Record<string, any>;

async function load(d: TestDaemon, path: string, name: string, extra: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const res = await d.post("/load_model", { path, name, ...extra });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

async function chat(d: TestDaemon, model: string | undefined, maxTokens: number): Promise<string> {
  const res = await d.post("/run_prompt", { prompt: "hello", max_tokens: maxTokens, temperature: 0, ...(model && { model }) });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return text;
}

const names = async (d: TestDaemon) => ((await d.status()).models as Array<{ name: string }>).map((m) => m.name);

describe("several models at once", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ maxModels: 2 });
  });
  after(() => d?.close());

  it("answers with each model's own exact text when addressed by name, also concurrently", async () => {
    const loaded = await load(d, await tinyModel(), "abc");
    assert.equal(loaded.message, "Model loaded", "the seed's answer is unchanged");
    assert.equal(loaded.name, "abc");
    await load(d, await skipModel(), "ace");
    assert.equal(await chat(d, "abc", 8), expectedChatReply(8));
    assert.equal(await chat(d, "ace", 8), expectedChatReply(8, 2));
    assert.notEqual(expectedChatReply(8), expectedChatReply(8, 2));
    const together = await Promise.all([1, 2, 3].flatMap(() => [chat(d, "abc", 20), chat(d, "ace", 20)]));
    assert.deepEqual(together, [1, 2, 3].flatMap(() => [expectedChatReply(20), expectedChatReply(20, 2)]));
  });

  it("serves requests without a model from the most recently loaded one, as the seed's clients expect", async () => {
    assert.equal(await chat(d, undefined, 6), expectedChatReply(6, 2));
    const status = await d.status();
    assert.equal(status.state, "idle");
    assert.equal(status.model_loaded, true);
    assert.equal(status.models[0].name, "ace", "the default model is listed first");
  });

  it("lists every model in /status with its state, queue, context, size and keep-alive", async () => {
    const status = await d.status();
    assert.deepEqual(status.models.map((m: { name: string }) => m.name).sort(), ["abc", "ace"]);
    for (const m of status.models) {
      assert.equal(m.state, "idle");
      assert.equal(m.queue_length, 0);
      assert.equal(m.context_size, 2048);
      assert.ok(m.size_bytes > 0);
      assert.ok(Date.parse(m.last_used) > 0);
      assert.ok(Date.parse(m.expires_at) > Date.now(), "idle models expire after the default keep-alive");
      assert.equal(m.keep_alive_s, 300);
    }
    assert.deepEqual(status.limits, { max_models: 2, parallel: 1, keep_alive_s: 300, max_memory: "90%" });
  });

  it("refuses a model name that is not loaded with 404 and the names that are", async () => {
    const res = await d.post("/run_prompt", { prompt: "x", model: "nope" });
    const body = await json(res);
    assert.equal(res.status, 404);
    assert.equal(body.code, "UNKNOWN_MODEL");
    assert.match(body.message, /No model named "nope" is loaded or in the models directories \(loaded: .*abc.*\)/);
  });

  it("routes OpenAI requests by their model field and lists the loaded models", async () => {
    const models = await json(await d.get("/v1/models"));
    assert.deepEqual(models.data.map((m: { id: string }) => m.id).sort(), ["abc", "ace"]);
    for (const model of ["abc", "ace"]) {
      const res = await d.post("/v1/chat/completions", { model, messages: [{ role: "user", content: "hi" }], max_tokens: 5, temperature: 0 });
      const body = await json(res);
      assert.equal(body.model, model);
      assert.equal(body.choices[0].message.content, expectedChatReply(5, model === "ace" ? 2 : 1));
    }
    const unknown = await d.post("/v1/chat/completions", { model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });
    assert.equal(unknown.status, 404, "with several models loaded, an unknown name is an error, not another model's answer");
  });

  it("/stop with a model stops only that model", async () => {
    await load(d, await slowModel(), "slow");
    assert.deepEqual((await names(d)).sort(), ["ace", "slow"], "loading a third model evicted the least recently used idle one (abc: ace answered last)");
    const running = d.post("/run_prompt", { prompt: "a", raw: true, model: "slow", max_tokens: 5000 });
    await waitUntil(async () => (await d.status()).models.find((m: { name: string }) => m.name === "slow")?.state === "generating", 10_000, "slow generating");
    assert.deepEqual(await json(await d.post("/stop", { model: "ace" })), { stopped: false, dropped: 0 });
    assert.equal((await d.status()).models.find((m: { name: string }) => m.name === "slow").state, "generating", "the other model is untouched");
    assert.deepEqual(await json(await d.post("/stop", { model: "slow" })), { stopped: true, dropped: 0 });
    const res = await running;
    assert.equal(res.headers.get("x-finish-reason"), "cancelled");
    await res.text();
  });

  it("never evicts a busy model: with every model busy, a load gets 409 naming them", async () => {
    const long = (model: string) => d.post("/run_prompt", { prompt: "a", raw: true, model, max_tokens: 5000 });
    await load(d, await slowModel(), "slow2");
    assert.deepEqual((await names(d)).sort(), ["slow", "slow2"]);
    const runs = [long("slow"), long("slow2")];
    await waitUntil(async () => (await d.status()).models.every((m: { state: string }) => m.state === "generating"), 10_000, "both generating");
    const res = await d.post("/load_model", { path: await tinyModel(), name: "abc" });
    const body = await json(res);
    assert.equal(res.status, 409);
    assert.equal(body.code, "BUSY");
    assert.match(body.message, /slow, slow2 are busy|slow2, slow are busy/);
    assert.deepEqual((await names(d)).sort(), ["slow", "slow2"], "nothing was evicted");
    await d.post("/stop");
    for (const r of await Promise.all(runs)) assert.equal(r.headers.get("x-finish-reason"), "cancelled");
    await load(d, await tinyModel(), "abc");
    assert.equal((await names(d)).length, 2);
  });

  it("/unload_model with a model unloads only that one", async () => {
    const before = await names(d);
    const gone = before.find((n) => n !== "abc")!;
    const res = await json(await d.post("/unload_model", { model: gone }));
    assert.equal(res.unloaded, true);
    await waitUntil(async () => (await names(d)).length === 1, 5_000, "one model left");
    assert.deepEqual(await names(d), ["abc"]);
    assert.equal(await chat(d, undefined, 4), expectedChatReply(4));
  });
});

describe("memory budget (--max-memory)", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ maxModels: 4, maxMemory: { bytes: 100 * 1024 * 1024 } });
  });
  after(() => d?.close());

  it("evicts idle models, least recently used first, to fit the budget", async () => {
    await load(d, await tinyModel(), "abc");
    const one = (await d.status()).models[0].memory_bytes;
    assert.ok(one > 50 * 1024 * 1024 && one < 100 * 1024 * 1024, `one tiny model is estimated at ${one} bytes`);
    await load(d, await skipModel(), "ace");
    assert.deepEqual(await names(d), ["ace"], "two do not fit in 100 MiB, so the idle one made room");
  });

  it("refuses with 507 and both numbers when even an empty daemon could not fit the model", async () => {
    const res = await d.post("/load_model", { path: await slowModel(), name: "slow", context_size: 8192 });
    const body = await json(res);
    assert.equal(res.status, 507);
    assert.equal(body.code, "INSUFFICIENT_MEMORY");
    assert.ok(body.needed_bytes > body.available_bytes);
    assert.equal(body.available_bytes, 100 * 1024 * 1024);
    assert.match(body.message, /needs about [\d.]+ GiB but [\d.]+ GiB of the --max-memory budget is left/);
    assert.deepEqual(await names(d), ["ace"], "the loaded model is kept");
  });
});

describe("keep-alive", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ maxModels: 2 });
  });
  after(() => d?.close());

  it("unloads an idle model once its keep-alive has run out, and /status shows it", async () => {
    await load(d, await skipModel(), "ace", { keep_alive: -1 });
    await load(d, await tinyModel(), "abc", { keep_alive: "1.5s" });
    const status = await d.status();
    const abc = status.models.find((m: { name: string }) => m.name === "abc");
    assert.equal(abc.keep_alive_s, 1.5);
    assert.ok(Date.parse(abc.expires_at) <= Date.now() + 1500);
    assert.equal(status.models.find((m: { name: string }) => m.name === "ace").expires_at, null, "-1 keeps a model forever");
    await waitUntil(async () => (await names(d)).length === 1, 5_000, "abc to expire");
    assert.deepEqual(await names(d), ["ace"]);
  });

  it("keep_alive 0 on a request unloads the model right after it", async () => {
    await load(d, await tinyModel(), "abc");
    const res = await d.post("/run_prompt", { prompt: "hi", model: "abc", max_tokens: 3, keep_alive: 0 });
    assert.equal(await res.text(), expectedChatReply(3));
    await waitUntil(async () => !(await names(d)).includes("abc"), 5_000, "abc to be unloaded");
  });

  it("refuses a keep_alive that is not a duration", async () => {
    const res = await d.post("/run_prompt", { prompt: "hi", keep_alive: "soon" });
    assert.equal(res.status, 400);
    assert.match((await json(res)).message, /"keep_alive" must be seconds, or a duration such as "30s"/);
  });
});

describe("parallel slots (--parallel)", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ parallel: 2 });
  });
  after(() => d?.close());

  it("decodes two requests at once and returns each client's own exact text", async () => {
    await load(d, await slowModel(), "slow");
    assert.equal((await d.status()).models[0].parallel, 2);
    const prompts = ["a", "K", "3", "q"];
    const runs = prompts.map((prompt) => d.post("/run_prompt", { prompt, raw: true, max_tokens: 120 }).then((r) => r.text()));
    let most = 0;
    await waitUntil(async () => {
      const m = (await d.status()).models[0];
      most = Math.max(most, m.running);
      return most === 2 || m.state === "idle";
    }, 20_000, "two running at once");
    assert.equal(most, 2, "two generations ran side by side");
    assert.deepEqual(await Promise.all(runs), prompts.map((p) => expectedContinuation(p, 120)));
  });
});

describe("parallel slots with no waiting (--parallel 2 --max-queue 0)", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ parallel: 2, maxQueue: 0 });
  });
  after(() => d?.close());

  it("serves two requests at once, and refuses only a third while both slots generate", async () => {
    await load(d, await slowModel(), "slow");
    const first = d.post("/run_prompt", { prompt: "a", raw: true, max_tokens: 150 });
    await waitUntil(async () => (await d.status()).models[0].running === 1, 10_000, "the first running");
    const second = d.post("/run_prompt", { prompt: "K", raw: true, max_tokens: 150 });
    await waitUntil(async () => (await d.status()).models[0].running === 2, 10_000, "the second running beside it");
    const third = await d.post("/run_prompt", { prompt: "3", raw: true, max_tokens: 5 });
    assert.equal(third.status, 503);
    assert.match(((await third.json()) as { message: string }).message, /All 2 slot\(s\) are generating .*--max-queue is 0/);
    const [a, k] = await Promise.all([first, second]);
    assert.equal(a.status, 200, "the second request did not cost the first");
    assert.equal(k.status, 200, "a free slot is not a full queue");
    assert.equal(await k.text(), expectedContinuation("K", 150));
  });
});
