import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { expectedChatReply, expectedContinuation, SOFT_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { fixtureModel, tinyModel } from "../testing/fixtures.ts";

// Log-probabilities and the prompt cache, through the official clients and the seed route: real engine,
// generated models whose probabilities are known in closed form.

/**
 * The char model's distribution: its residual stream is a one-hot vector, RMS-normalised to sqrt(1/(1/n + eps))
 * at one place, so the next character's logit is that times the output scale and every other logit is 0.
 */
const VOCABULARY = 356;
const EMBEDDING = 384;
const RMS_EPS = 1e-5;
function charModelLogprobs(outputScale: number): { winner: number; other: number } {
  const logit = outputScale * Math.sqrt(1 / (1 / EMBEDDING + RMS_EPS));
  const logSum = Math.log(Math.exp(logit) + VOCABULARY - 1);
  return { winner: logit - logSum, other: -logSum };
}
const SOFT = charModelLogprobs(SOFT_CHAR_MODEL.outputScale!);
const close = (actual: number, expected: number, what: string) => assert.ok(Math.abs(actual - expected) < 1e-4, `${what}: ${actual}, expected ${expected}`);

describe("logprobs and the prompt cache", () => {
  let d: TestDaemon;
  let openai: OpenAI;
  let ollama: Ollama;
  before(async () => {
    const [tiny, soft] = await Promise.all([tinyModel(), fixtureModel(SOFT_CHAR_MODEL)]);
    d = await startTestDaemon({ maxModels: 2, parallel: 2 });
    assert.equal((await d.post("/load_model", { path: tiny, name: "tiny" })).status, 200);
    assert.equal((await d.post("/load_model", { path: soft, name: "soft" })).status, 200);
    openai = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "sk-local", maxRetries: 0 });
    ollama = new Ollama({ host: d.url });
  });
  after(() => d?.close());

  it("gives each chat token its log-probability and the most likely alternatives (openai, greedy)", async () => {
    const r = await openai.chat.completions.create({
      model: "soft",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 4,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = r.choices[0].logprobs!.content!;
    assert.equal(r.choices[0].message.content, expectedChatReply(4));
    assert.deepEqual(content.map((t) => t.token).join(""), expectedChatReply(4));
    for (const t of content) {
      close(t.logprob, SOFT.winner, `logprob of ${JSON.stringify(t.token)}`);
      assert.deepEqual(t.bytes, [...Buffer.from(t.token)]);
      assert.equal(t.top_logprobs.length, 3);
      assert.equal(t.top_logprobs[0].token, t.token, "the greedy token is the most likely");
      close(t.top_logprobs[0].logprob, SOFT.winner, "top 1");
      for (const alt of t.top_logprobs.slice(1)) close(alt.logprob, SOFT.other, "an alternative");
    }
  });

  it("gives the log-probabilities after the sampling options: a lower temperature sharpens them", async () => {
    const r = await ollama.chat({
      model: "soft",
      messages: [{ role: "user", content: "hi" }],
      options: { temperature: 0.5, top_k: 0, top_p: 1, min_p: 0, seed: 1, num_predict: 3 },
      logprobs: true,
      top_logprobs: 1,
    });
    const sharp = charModelLogprobs(SOFT_CHAR_MODEL.outputScale! / 0.5);
    // A sampled token may be another than the most likely one (p ≈ 0.5); the most likely one's figure is known.
    for (const t of r.logprobs!) close(t.top_logprobs![0].logprob, sharp.winner, "at temperature 0.5");
  });

  it("lists logprobs on /v1/completions as OpenAI's completions do, and all of them in the last streamed chunk", async () => {
    const r = await openai.completions.create({ model: "tiny", prompt: "abc", max_tokens: 3, temperature: 0, logprobs: 2 });
    const lp = r.choices[0].logprobs!;
    assert.deepEqual(lp.tokens, ["d", "e", "f"]);
    assert.deepEqual(lp.text_offset, [0, 1, 2]);
    assert.equal(lp.top_logprobs!.length, 3);
    assert.deepEqual(Object.keys(lp.top_logprobs![0]).length, 2);
    const tiny = charModelLogprobs(1);
    for (const v of lp.token_logprobs!) close(v, tiny.winner, "tiny model's winner");
    assert.equal(lp.top_logprobs![0].d, lp.token_logprobs![0]);

    const stream = await openai.chat.completions.create({
      model: "soft",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 5,
      temperature: 0,
      logprobs: true,
      stream: true,
    });
    const gathered = [];
    for await (const chunk of stream) gathered.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    assert.equal(gathered.map((t) => t.token).join(""), expectedChatReply(5));
  });

  it("gives Ollama's logprobs and top_logprobs on /api/chat and /api/generate (ollama client)", async () => {
    const chat = await ollama.chat({ model: "soft", messages: [{ role: "user", content: "hi" }], options: { temperature: 0, num_predict: 3 }, logprobs: true, top_logprobs: 2 });
    assert.equal(chat.message.content, expectedChatReply(3));
    assert.equal(chat.logprobs!.map((t) => t.token).join(""), expectedChatReply(3));
    for (const t of chat.logprobs!) {
      close(t.logprob, SOFT.winner, "chat token");
      assert.equal(t.top_logprobs!.length, 2);
      close(t.top_logprobs![1].logprob, SOFT.other, "chat alternative");
    }
    const gen = await ollama.generate({ model: "soft", prompt: "xy", raw: true, options: { temperature: 0, num_predict: 2 }, logprobs: true });
    assert.equal(gen.response, expectedContinuation("xy", 2));
    assert.deepEqual(gen.logprobs!.map((t) => t.token), ["z", "a"]);
    for (const t of gen.logprobs!) close(t.logprob, SOFT.winner, "generate token");
    const without = await ollama.generate({ model: "soft", prompt: "xy", raw: true, options: { num_predict: 2 } });
    assert.equal(without.logprobs, undefined, "none unless asked for");
  });

  it("lists as many alternatives as asked for, the impossible ones at OpenAI's floor of -9999, each token once", async () => {
    // The tiny model is so sure of its next character that the default sampling (min_p, top_p) leaves one
    // token possible; top_k 2 (without top_p and min_p) leaves two. They were listed alone before: asked 5, got 1 or 2.
    const checkSteps = (steps: Array<{ token: string; top_logprobs?: Array<{ token: string; logprob: number }> | null }>, what: string) => {
      assert.ok(steps.length > 0, what);
      for (const t of steps) {
        const top = t.top_logprobs ?? [];
        assert.equal(top.length, 5, `${what}: ${JSON.stringify(top)}`);
        assert.equal(top[0].token, t.token, `${what}: the sampled token first`);
        assert.equal(new Set(top.map((a) => a.token)).size, 5, `${what}: distinct tokens ${JSON.stringify(top)}`);
        for (const a of top) assert.ok(Number.isFinite(a.logprob) && a.logprob >= -9999, `${what}: ${JSON.stringify(a)}`);
        assert.equal(top.at(-1)!.logprob, -9999, `${what}: impossible ones at the floor`);
      }
    };
    const chat = await openai.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 3, logprobs: true, top_logprobs: 5 });
    checkSteps(chat.choices[0].logprobs!.content!, "openai chat, default sampling");
    const topK = await ollama.generate({ model: "tiny", prompt: "abc", raw: true, options: { top_k: 2, top_p: 1, min_p: 0, num_predict: 3 }, logprobs: true, top_logprobs: 5 });
    checkSteps(topK.logprobs!, "ollama generate, top_k 2");
    assert.ok(topK.logprobs!.every((t) => t.top_logprobs![1].logprob > -9999), "the second token top_k left is listed with its figure");
    const completion = await openai.completions.create({ model: "tiny", prompt: "abc", max_tokens: 3, logprobs: 5 });
    for (const step of completion.choices[0].logprobs!.top_logprobs!) assert.equal(Object.keys(step).length, 5, `completions keyed by text: ${JSON.stringify(step)}`);
  });

  it("refuses logprobs it cannot give with a 400 naming the field", async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: "soft", messages: [{ role: "user", content: "x" }], top_logprobs: 2 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "top_logprobs",
    );
    await assert.rejects(
      openai.completions.create({ model: "soft", prompt: "x", logprobs: 6 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "logprobs",
    );
  });

  it("reuses the prompt cache on the next turn and says how much: usage.cached_tokens, X-Cached-Tokens, /status, prompt_eval_count", async () => {
    const history: OpenAI.ChatCompletionMessageParam[] = [
      { role: "system", content: "You answer in letters. ".repeat(20) },
      { role: "user", content: "first question" },
    ];
    const first = await openai.chat.completions.create({ model: "tiny", messages: history, max_tokens: 4, temperature: 0 });
    history.push(first.choices[0].message, { role: "user", content: "second question" });
    const second = await openai.chat.completions.create({ model: "tiny", messages: history, max_tokens: 4, temperature: 0 });
    const cached = second.usage!.prompt_tokens_details!.cached_tokens!;
    // The whole first turn's prompt is in the cache, and its reply too, as the template writes it back.
    assert.ok(cached >= first.usage!.prompt_tokens, `cached ${cached} of ${second.usage!.prompt_tokens}, first prompt ${first.usage!.prompt_tokens}`);
    assert.ok(cached < second.usage!.prompt_tokens);
    assert.equal(second.choices[0].message.content, expectedChatReply(4), "the cache changes no text");

    const prompt = "the same raw prompt, twice";
    const once = await d.post("/run_prompt", { model: "tiny", prompt, raw: true, max_tokens: 3 });
    await once.text();
    const twice = await d.post("/run_prompt", { model: "tiny", prompt, raw: true, max_tokens: 3 });
    assert.equal(await twice.text(), expectedContinuation(prompt, 3));
    const promptTokens = Number(twice.headers.get("x-prompt-tokens"));
    // The last prompt token is always evaluated again: its logits give the first new token.
    assert.equal(Number(twice.headers.get("x-cached-tokens")), promptTokens - 1);
    const model = (await d.status()).models.find((m: { name: string }) => m.name === "tiny");
    assert.ok(model, "listed in /status");
    const ps = await ollama.generate({ model: "tiny", prompt, raw: true, options: { num_predict: 3 } });
    assert.equal(ps.prompt_eval_count, 1, "Ollama counts the prompt tokens it evaluated");
  });

  it("takes the free sequence that holds the longest prefix of the prompt, not the first free one", async () => {
    const run = async (prompt: string) => {
      const res = await d.post("/run_prompt", { model: "tiny", prompt, raw: true, max_tokens: 2 });
      await res.text();
      return { cached: Number(res.headers.get("x-cached-tokens")), prompt: Number(res.headers.get("x-prompt-tokens")) };
    };
    const a = "conversation A, long enough to matter";
    await run(a);
    const second = await run(a);
    assert.equal(second.cached, second.prompt - 1, "A's own sequence, though it was freed last");
    await run("another prompt, unrelated");
    const third = await run(a);
    assert.equal(third.cached, third.prompt - 1, "A's sequence was kept for A while the unrelated prompt took the other one");
  });

  it("reports the cached tokens of the last generation in /status", async () => {
    const prompt = "status counts the cache";
    await (await d.post("/run_prompt", { prompt, raw: true, max_tokens: 2 })).text();
    const res = await d.post("/run_prompt", { prompt, raw: true, max_tokens: 2 });
    await res.text();
    const generation = (await d.status()).generation;
    assert.equal(generation.prompt_tokens, Number(res.headers.get("x-prompt-tokens")));
    assert.equal(generation.cached_tokens, generation.prompt_tokens - 1);
  });

  it("drops the oldest turns of a conversation too long for the context when asked (truncate), and says so", async () => {
    const long = "a".repeat(900);
    const messages = [
      { role: "system" as const, content: "Be brief." },
      { role: "user" as const, content: long },
      { role: "assistant" as const, content: long },
      { role: "user" as const, content: long },
      { role: "assistant" as const, content: "ok" },
      { role: "user" as const, content: "last question" },
    ];
    await assert.rejects(
      openai.chat.completions.create({ model: "tiny", messages, max_tokens: 3 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /truncate/.test((e.error as { message: string }).message),
    );
    const res = await d.post("/v1/chat/completions", { model: "tiny", messages, max_tokens: 3, temperature: 0, truncate: true });
    const body = (await res.json()) as Record<string, any>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.choices[0].message.content, expectedChatReply(3));
    assert.ok(body.truncated_messages >= 1 && body.truncated_messages <= 3, `truncated ${body.truncated_messages}`);
    assert.ok(body.usage.prompt_tokens <= 2048);
    const kept = await ollama.chat({ model: "tiny", messages, options: { num_predict: 3, temperature: 0 }, truncate: true } as Parameters<Ollama["chat"]>[0] & { stream?: false });
    assert.equal(kept.message.content, expectedChatReply(3));
    assert.equal((kept as unknown as { truncated_messages: number }).truncated_messages, body.truncated_messages);
  });
});
