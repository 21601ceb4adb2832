import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type LlamaRankingContext } from "node-llama-cpp";
import { expectedRerankScore, RERANK_MODEL_SHAPE } from "../testing/gguf/jobModels.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "../testing/fixtures.ts";
import { rerankModel } from "./helpers/jobModels.ts";

/**
 * llama-server's rerank route against the real daemon and a generated reranker whose scores follow a known
 * rule (testing/gguf/jobModels.ts: a document's score is decided by its last letter), compared with
 * node-llama-cpp's own ranking of the same texts in this process.
 */

interface RerankBody {
  model: string;
  object: string;
  usage: { prompt_tokens: number; total_tokens: number };
  results: Array<{ index: number; relevance_score: number; document?: { text: string } }>;
}

describe("reranking (llama-server's /v1/rerank)", () => {
  let d: TestDaemon;
  let dir: string;
  let llama: Llama;
  let model: LlamaModel;
  let ranking: LlamaRankingContext;
  const loaded = async () => (await d.status()).models.map((m: { name: string }) => m.name).sort();
  const rerank = async (body: Record<string, unknown>, path = "/v1/rerank") => {
    const r = await d.post(path, body);
    return { status: r.status, body: (await r.json()) as RerankBody & Record<string, any> };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-rerank-"));
    await copyFile(await rerankModel(), join(dir, "rerank.gguf"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    d = await startTestDaemon({ modelsDirs: [dir], maxModels: 2 });
    llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1 });
    model = await llama.loadModel({ modelPath: join(dir, "rerank.gguf") });
    ranking = await model.createRankingContext({ contextSize: RERANK_MODEL_SHAPE.contextLength, threads: 1 });
  });
  after(async () => {
    await ranking?.dispose();
    await model?.dispose();
    await llama?.dispose();
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const query = "which fruit is sweetest";
  const documents = ["a lemon is sour", "honey is sweeter than fruit", "mango", "kiwi fruit", "plums, dried: prunes"];

  it("ranks documents best first with their index and score: the model's scores, as node-llama-cpp computes them", async () => {
    assert.deepEqual(await loaded(), []);
    const { status, body } = await rerank({ model: "rerank", query, documents });
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(await loaded(), ["rerank"], "loaded on first use");
    assert.equal(body.model, "rerank");
    assert.equal(body.object, "list");
    // Last letters r, t, o, t, s: the later in the alphabet, the higher; the two "t"s keep the documents' order.
    assert.deepEqual(body.results.map((r) => r.index), [1, 3, 4, 0, 2]);
    const own = await ranking.rankAll(query, documents);
    for (const r of body.results) {
      assert.ok(Math.abs(r.relevance_score - own[r.index]) < 1e-6, `document ${r.index}: ${r.relevance_score}, node-llama-cpp ${own[r.index]}`);
      assert.ok(Math.abs(r.relevance_score - expectedRerankScore(documents[r.index])) < 1e-4, `document ${r.index} follows the model's rule`);
    }
    const tokens = documents.reduce((n, doc) => n + ranking.calculateInputLength(query, doc), 0);
    assert.deepEqual(body.usage, { prompt_tokens: tokens, total_tokens: tokens });
  });

  it("top_n keeps the best; return_documents adds their text; /rerank and /v1/reranking answer the same", async () => {
    const top = await rerank({ model: "rerank", query, documents, top_n: 2, return_documents: true });
    assert.deepEqual(top.body.results.map((r) => [r.index, r.document?.text]), [[1, documents[1]], [3, documents[3]]]);
    const full = await rerank({ model: "rerank", query, documents, top_n: 50 });
    assert.equal(full.body.results.length, documents.length, "top_n past the documents returns them all");
    assert.equal(full.body.results[0].document, undefined);
    for (const path of ["/rerank", "/v1/reranking"]) {
      const other = await rerank({ query, documents }, path);
      assert.equal(other.status, 200, path);
      assert.deepEqual(other.body.results, full.body.results, path);
    }
  });

  it("refuses a malformed request, a model that is not a reranker, and a document too long", async () => {
    const bad = await rerank({ model: "rerank", documents });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, "query", "OpenAI's error shape under /v1/");
    const badKekahyde = await rerank({ query, documents: [] }, "/rerank");
    assert.equal(badKekahyde.status, 400);
    assert.equal(badKekahyde.body.field, "documents", "Kekahyde's shape elsewhere");
    assert.equal((await rerank({ query, documents: ["ok", 7] })).body.error.param, "documents[1]");
    assert.equal((await rerank({ query, documents, top_n: 0 })).body.error.param, "top_n");

    const notReranker = await rerank({ model: "tiny", query, documents });
    assert.equal(notReranker.status, 400);
    assert.equal(notReranker.body.error.code, "not_supported");
    assert.match(notReranker.body.error.message, /not a reranker/);
    assert.deepEqual(await loaded(), ["rerank", "tiny"], "a refusal leaves the model loaded");

    const tooLong = await rerank({ model: "rerank", query, documents: ["short", "x".repeat(600)] });
    assert.equal(tooLong.status, 400);
    assert.equal(tooLong.body.error.code, "prompt_too_long");
    assert.match(tooLong.body.error.message, /document 1 is \d+ tokens but the model ranks at most 511/);

    const embedding = await d.post("/v1/embeddings", { model: "rerank", input: "x" });
    assert.equal(embedding.status, 400);
    assert.match(((await embedding.json()) as { error: { message: string } }).error.message, /is a reranker/);
  });

  it("a generative model embeds as its last token's hidden state (the model says no pooling), unit length", async () => {
    const r = await d.post("/api/embed", { model: "tiny", input: "abc" });
    const { embeddings } = (await r.json()) as { embeddings: number[][] };
    assert.equal(embeddings[0].length, 384);
    assert.ok(Math.abs(Math.hypot(...embeddings[0]) - 1) < 1e-6);
    // The char model's last hidden state is the one-hot vector of its last token, "c".
    const { tokens } = (await (await d.post("/tokenize", { model: "tiny", content: "c" })).json()) as { tokens: number[] };
    assert.ok(embeddings[0][tokens[0]] > 0.999, `the "c" component: ${embeddings[0][tokens[0]]}`);
  });
});
