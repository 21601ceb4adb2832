import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { getLlama, LlamaLogLevel, type Llama, type LlamaEmbeddingContext, type LlamaModel } from "node-llama-cpp";
import { Ollama } from "ollama";
import OpenAI from "openai";
import { EMBEDDING_MODEL_SHAPE } from "../testing/gguf/jobModels.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { embeddingModel } from "./helpers/jobModels.ts";

/**
 * Embeddings through the official openai and ollama clients against the real daemon, compared with
 * node-llama-cpp's own embedding of the same text in this process: same file, same library, no daemon.
 * Also llama-server's /tokenize and /detokenize, whose counts are what embeddings and generations use.
 */

const norm = (v: readonly number[]) => Math.hypot(...v);
const unit = (v: readonly number[]) => v.map((x) => x / norm(v));
const cosine = (a: readonly number[], b: readonly number[]) => a.reduce((s, x, i) => s + x * b[i], 0) / (norm(a) * norm(b));

function assertSameVector(actual: readonly number[], expected: readonly number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  assert.ok(Math.abs(norm(actual) - 1) < 1e-5, `${what}: unit length, got ${norm(actual)}`);
  const c = cosine(actual, expected);
  assert.ok(c > 0.9999, `${what}: cosine ${c}`);
}

describe("embeddings with the official openai and ollama clients", () => {
  let d: TestDaemon;
  let dir: string;
  let openai: OpenAI;
  let ollama: Ollama;
  let llama: Llama;
  let model: LlamaModel;
  let context: LlamaEmbeddingContext;
  /** node-llama-cpp's own vector for `text`, in this process. */
  const reference = async (text: string) => [...(await context.getEmbeddingFor(text)).vector];
  const loaded = async () => (await d.status()).models.map((m: { name: string }) => m.name).sort();
  const tokenize = async (body: Record<string, unknown>) => (await (await d.post("/tokenize", body)).json()) as { tokens: Array<number | { id: number; piece: string | number[] }> };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-embed-"));
    await copyFile(await embeddingModel(), join(dir, "embed.gguf"));
    d = await startTestDaemon({ modelsDirs: [dir] });
    openai = new OpenAI({ baseURL: `${d.url}/v1`, apiKey: "unused", maxRetries: 0 });
    ollama = new Ollama({ host: d.url });
    llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1 });
    model = await llama.loadModel({ modelPath: join(dir, "embed.gguf") });
    context = await model.createEmbeddingContext({ contextSize: EMBEDDING_MODEL_SHAPE.contextLength, threads: 1 });
  });
  after(async () => {
    await context?.dispose();
    await model?.dispose();
    await llama?.dispose();
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("Ollama's /api/embed loads the model on first use and returns node-llama-cpp's vectors, unit length", async () => {
    assert.deepEqual(await loaded(), []);
    const r = await ollama.embed({ model: "embed", input: "The quick brown fox" });
    assert.deepEqual(await loaded(), ["embed"]);
    assert.equal(r.model, "embed");
    assert.equal(r.embeddings.length, 1);
    assertSameVector(r.embeddings[0], await reference("The quick brown fox"), "single input");
    assert.equal(r.prompt_eval_count, "The quick brown fox".length + 1, "one token a character, and BOS");
    assert.ok(r.total_duration > 0);

    const texts = ["alpha", "beta gamma", "delta"];
    const batch = await ollama.embed({ model: "embed", input: texts });
    for (const [i, text] of texts.entries()) assertSameVector(batch.embeddings[i], await reference(text), text);
    // Different texts give different vectors (the model's vectors depend on every token and their order).
    assert.ok(cosine(batch.embeddings[0], batch.embeddings[1]) < 0.99);
    assert.ok(cosine((await ollama.embed({ model: "embed", input: "ab" })).embeddings[0], (await ollama.embed({ model: "embed", input: "ba" })).embeddings[0]) < 0.999);

    assert.deepEqual((await ollama.embed({ model: "embed", input: [] })).embeddings, [], "no input: nothing to embed, as Ollama");
    assert.deepEqual((await ollama.show({ model: "embed" })).capabilities, ["embedding"], "as Ollama says of a model with a pooling type");
    const legacy = await ollama.embeddings({ model: "embed", prompt: "beta gamma" });
    assert.deepEqual(legacy.embedding, batch.embeddings[1], "the older /api/embeddings answers the same vector");
  });

  it("Ollama's truncate: false refuses an input longer than the context, true (the default) embeds what fits", async () => {
    const long = Array.from({ length: 400 }, (_, i) => "abcdefghijklmnopqrstuvwxyz"[(i * 7) % 26]).join("");
    await assert.rejects(ollama.embed({ model: "embed", input: long, truncate: false }), (e: Error & { status_code?: number }) => {
      assert.equal(e.status_code, 400);
      assert.match(e.message, /401 tokens but the model embeds at most 255/);
      return true;
    });
    const cut = await ollama.embed({ model: "embed", input: long });
    // The context holds 256 tokens and node-llama-cpp evaluates fewer than it holds: BOS and 254 characters.
    assert.equal(cut.prompt_eval_count, 255);
    assertSameVector(cut.embeddings[0], await reference(long.slice(0, 254)), "truncated");
    assert.ok(cosine(cut.embeddings[0], await reference(long.slice(-254))) < 0.999, "the end is cut, not the start");
  });

  it("OpenAI's client: string and array input, base64 (the client's default) and float, usage as /tokenize counts", async () => {
    const one = await openai.embeddings.create({ model: "embed", input: "hello world" });
    assert.equal(one.object, "list");
    assert.equal(one.model, "embed");
    assert.equal(one.data.length, 1);
    assert.equal(one.data[0].index, 0);
    assertSameVector(one.data[0].embedding, await reference("hello world"), "base64, decoded by the client");
    const { tokens } = await tokenize({ model: "embed", content: "hello world", add_special: true });
    assert.equal(one.usage.prompt_tokens, tokens.length);
    assert.equal(one.usage.total_tokens, tokens.length);

    const floats = await openai.embeddings.create({ model: "embed", input: "hello world", encoding_format: "float" });
    floats.data[0].embedding.forEach((x, i) => assert.ok(Math.abs(x - one.data[0].embedding[i]) < 1e-6, `value ${i}: float ${x}, base64 ${one.data[0].embedding[i]}`));
    const raw = (await (await d.post("/v1/embeddings", { model: "embed", input: "hello world", encoding_format: "base64" })).json()) as { data: Array<{ embedding: string }> };
    const bytes = Buffer.from(raw.data[0].embedding, "base64");
    assert.equal(bytes.length, 4 * EMBEDDING_MODEL_SHAPE.embeddingLength, "little-endian float32 values");
    assert.ok(Math.abs(bytes.readFloatLE(4) - floats.data[0].embedding[1]) < 1e-6);

    const texts = ["one", "two words", "three little words"];
    const batch = await openai.embeddings.create({ model: "embed", input: texts, encoding_format: "float" });
    assert.deepEqual(batch.data.map((e) => e.index), [0, 1, 2]);
    let usage = 0;
    for (const [i, text] of texts.entries()) {
      const single = await openai.embeddings.create({ model: "embed", input: text, encoding_format: "float" });
      assert.deepEqual(batch.data[i].embedding, single.data[0].embedding, `batch = one by one: ${text}`);
      assertSameVector(single.data[0].embedding, await reference(text), text);
      usage += single.usage.prompt_tokens;
    }
    assert.equal(batch.usage.prompt_tokens, usage);
  });

  it("OpenAI's dimensions: the first values of the vector, scaled back to unit length; more than the model has is a 400", async () => {
    const full = (await openai.embeddings.create({ model: "embed", input: "matryoshka", encoding_format: "float" })).data[0].embedding;
    const cut = (await openai.embeddings.create({ model: "embed", input: "matryoshka", dimensions: 16, encoding_format: "float" })).data[0].embedding;
    assert.equal(cut.length, 16);
    assertSameVector(cut, unit(full.slice(0, 16)), "cut");
    await assert.rejects(
      openai.embeddings.create({ model: "embed", input: "x", dimensions: EMBEDDING_MODEL_SHAPE.embeddingLength + 1 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === "dimensions" && /have 64/.test(e.message),
    );
  });

  it("OpenAI's refusals: empty input, token ids, a bad encoding_format, an input too long (never truncated)", async () => {
    const refused = async (body: Record<string, unknown>, param: string, code = "bad_request") => {
      const r = await d.post("/v1/embeddings", { model: "embed", ...body });
      const { error } = (await r.json()) as { error: { param: string; code: string } };
      assert.equal(r.status, 400, JSON.stringify(error));
      assert.equal(error.param, param);
      assert.equal(error.code, code);
    };
    await refused({ input: "" }, "input");
    await refused({ input: [] }, "input");
    await refused({ input: ["a", ""] }, "input[1]");
    await refused({ input: [1, 2, 3] }, "input");
    await refused({ input: "a", encoding_format: "int8" }, "encoding_format");
    await refused({ input: "a".repeat(300) }, "input", "prompt_too_long");
    await refused({ input: "a", dimensions: 0 }, "dimensions");
  });

  it("/tokenize and /detokenize in llama-server's shape; token counts are what a generation uses", async () => {
    const plain = await tokenize({ model: "embed", content: "abc" });
    assert.equal(plain.tokens.length, 3);
    const special = await tokenize({ model: "embed", content: "abc", add_special: true });
    assert.deepEqual(special.tokens, [1, ...plain.tokens], "BOS first");
    const run = await d.post("/run_prompt", { model: "embed", prompt: "abc", raw: true, max_tokens: 2, temperature: 0 });
    assert.equal(run.headers.get("x-prompt-tokens"), String(special.tokens.length), "the prompt tokens a raw generation reports");
    await run.text();

    const pieces = await tokenize({ model: "embed", content: "aé<s>", add_special: true, with_pieces: true });
    assert.deepEqual(pieces.tokens.map((t) => (t as { piece: unknown }).piece), ["<s>", "a", [0xc3], [0xa9], "<", "s", ">"], "bytes where a piece is not UTF-8 by itself");
    assert.equal((await tokenize({ model: "embed", content: "a<s>", parse_special: true })).tokens.length, 2, "parse_special reads <s> as BOS");

    const ids = (pieces.tokens as Array<{ id: number }>).map((t) => t.id);
    const back = await d.post("/detokenize", { model: "embed", tokens: ids });
    assert.deepEqual(await back.json(), { content: "<s>aé<s>" });
    // Without a model: the default one (the only one).
    assert.deepEqual((await tokenize({ content: "xyz" })).tokens, (await tokenize({ model: "embed", content: "xyz" })).tokens);

    const bad = await d.post("/detokenize", { model: "embed", tokens: [5, 354] });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { message: string }).message, /"tokens"\[1\] is 354, not a token of this model/);
    const missing = await d.post("/tokenize", { model: "embed" });
    assert.equal(missing.status, 400);
  });

  it("an embedding is a job of the model's runtime: it shows in /status, others wait in its queue, /stop stops it", async () => {
    const many = Array.from({ length: 1500 }, (_, i) => `${i} `.padEnd(200, "klmnopq"));
    const view = async () => (await d.status()).models.find((m: { name: string }) => m.name === "embed") as { state: string; running: number; queue_length: number };
    const first = d.post("/v1/embeddings", { model: "embed", input: many });
    await waitUntil(async () => (await view()).running === 1, 10_000, "the embedding running");
    const second = d.post("/api/embed", { model: "embed", input: "queued" });
    await waitUntil(async () => (await view()).queue_length === 1, 10_000, "the second request waiting");
    assert.equal((await view()).state, "generating", "busy with the job");

    const stop = await d.post("/stop", { model: "embed" });
    assert.deepEqual(await stop.json(), { stopped: true, dropped: 0 });
    const stopped = await first;
    assert.equal(stopped.status, 503);
    assert.equal(((await stopped.json()) as { error: { code: string } }).error.code, "job_stopped");
    const next = await second;
    assert.equal(next.status, 200, "the waiting one runs next");
    assertSameVector(((await next.json()) as { embeddings: number[][] }).embeddings[0], await reference("queued"), "queued");

    const metrics = await (await d.get("/metrics")).text();
    assert.match(metrics, /kekahyde_http_requests_total\{route="\/v1\/embeddings",method="POST",status="503"\} 1/);
  });
});
