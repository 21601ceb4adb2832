import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { expectedContinuation } from "../src/gguf/charModel.ts";
import { TINY_RANDOM_SHAPE } from "../testing/gguf/draftModels.ts";
import { writeRandomLlama } from "../src/gguf/randomModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { skipModel, tinyModel } from "../testing/fixtures.ts";

/**
 * Speculative decoding through the daemon (real engine process, generated models): `"draft_model"` and
 * `"speculative": "lookup"` on POST /load_model, greedy text unchanged, drafted and accepted tokens in the
 * generation's figures on /status and in /metrics, and clear refusals of a draft that cannot work.
 */
describe("speculative decoding over HTTP (draft_model, speculative: lookup)", { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let dir: string;
  let outside: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-spec-"));
    outside = await mkdtemp(join(tmpdir(), "kekahyde-spec-outside-"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    // The same model as its own draft: every drafted token holds.
    await copyFile(await tinyModel(), join(dir, "tiny-draft.gguf"));
    await copyFile(await skipModel(), join(dir, "skip.gguf"));
    await copyFile(await tinyModel(), join(outside, "elsewhere.gguf"));
    // Another vocabulary (no chat tokens, 600 tokens): cannot draft for the char models.
    await writeRandomLlama(join(dir, "random.gguf"), TINY_RANDOM_SHAPE, "F16", 1);
    d = await startTestDaemon({ modelsDirs: [dir], threads: 1 });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
    await rm(outside, { recursive: true, force: true });
  });

  const load = async (body: Record<string, unknown>) => {
    const r = await d.post("/load_model", body);
    return { status: r.status, body: (await r.json()) as Record<string, any> };
  };
  const run = async (body: Record<string, unknown>) => {
    const r = await d.post("/run_prompt", { raw: true, temperature: 0, ...body });
    assert.equal(r.status, 200);
    return r.text();
  };
  const metric = (text: string, name: string): number => {
    const m = new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text);
    assert.ok(m, `${name} in /metrics`);
    return Number(m[1]);
  };

  it("refuses a draft model that cannot draft, with a 4xx that says what to do, and loads nothing", async () => {
    const missing = await load({ path: join(dir, "tiny.gguf"), draft_model: join(dir, "nope.gguf") });
    assert.equal(missing.status, 404, JSON.stringify(missing.body));
    assert.equal(missing.body.field, "draft_model");
    assert.match(missing.body.message, /^"draft_model": No file at .*nope\.gguf\. Check the path/);

    const mismatch = await load({ path: join(dir, "tiny.gguf"), draft_model: join(dir, "random.gguf") });
    assert.equal(mismatch.status, 400, JSON.stringify(mismatch.body));
    assert.equal(mismatch.body.field, "draft_model");
    assert.match(mismatch.body.message, /cannot draft for .*tiny\.gguf: .*vocabulary.* must share the model's vocabulary.*"speculative": "lookup"/);

    const forbidden = await load({ path: join(dir, "tiny.gguf"), draft_model: join(outside, "elsewhere.gguf") });
    assert.equal(forbidden.status, 403, JSON.stringify(forbidden.body));
    assert.equal(forbidden.body.field, "draft_model");
    assert.match(forbidden.body.message, /^"draft_model": /);

    const unknown = await load({ path: join(dir, "tiny.gguf"), draft_model: "no-such-draft" });
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
    assert.match(unknown.body.message, /^"draft_model": no model named "no-such-draft"/);

    for (const body of [{ speculative: "yes" }, { speculative: "lookup", draft_model: "tiny-draft" }, { draft_model: "" }, { draft_model: 3 }]) {
      const r = await load({ path: join(dir, "tiny.gguf"), ...body });
      assert.equal(r.status, 400, JSON.stringify(body));
    }
    assert.deepEqual((await d.status()).models, []);
  });

  it("a draft model by catalogue name: the exact greedy text, every draft accepted, in /status and /metrics", async () => {
    const plain = await load({ path: join(dir, "tiny.gguf") });
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    const plainMemory = (await d.status()).models[0].memory_bytes as number;
    assert.equal((await d.status()).models[0].speculative, null);

    const loaded = await load({ path: join(dir, "tiny.gguf"), draft_model: "tiny-draft" });
    assert.equal(loaded.status, 200, JSON.stringify(loaded.body));
    assert.equal(loaded.body.model.speculative, "draft");
    assert.equal(loaded.body.model.draft_model.path, join(dir, "tiny-draft.gguf"));
    const status = await d.status();
    assert.equal(status.models[0].speculative, "draft");
    assert.ok(status.models[0].memory_bytes > plainMemory, `the draft counts in the estimate: ${status.models[0].memory_bytes} > ${plainMemory}`);

    assert.equal(await run({ prompt: "abc", max_tokens: 40 }), expectedContinuation("abc", 40));
    const g = (await d.status()).generation;
    assert.equal(g.tokens, 40);
    assert.ok(g.draft_tokens >= 28, `drafted ${g.draft_tokens}`);
    assert.equal(g.accepted_draft_tokens, g.draft_tokens);
    assert.equal(g.draft_acceptance_rate, 1);
    const metrics = await (await d.get("/metrics")).text();
    assert.equal(metric(metrics, "kekahyde_draft_tokens_total"), g.draft_tokens);
    assert.equal(metric(metrics, "kekahyde_draft_tokens_accepted_total"), g.draft_tokens);
    assert.equal(metric(metrics, "kekahyde_draft_acceptance_rate"), 1);

    // With a temperature the model samples as ever, without drafts.
    const sampled = await run({ prompt: "abc", max_tokens: 10, temperature: 0.7, seed: 1 });
    assert.equal(sampled, expectedContinuation("abc", 10));
    assert.equal((await d.status()).generation.draft_tokens, undefined);
  });

  it("a draft that never agrees: the same text, nothing accepted", async () => {
    const loaded = await load({ path: join(dir, "tiny.gguf"), draft_model: join(dir, "skip.gguf") });
    assert.equal(loaded.status, 200, JSON.stringify(loaded.body));
    assert.equal(await run({ prompt: "abc", max_tokens: 40 }), expectedContinuation("abc", 40));
    const g = (await d.status()).generation;
    assert.ok(g.draft_tokens > 0);
    assert.equal(g.accepted_draft_tokens, 0);
    assert.equal(g.draft_acceptance_rate, 0);
  });

  it('"speculative": "lookup": drafts from the prompt, same text', async () => {
    const loaded = await load({ path: join(dir, "tiny.gguf"), speculative: "lookup" });
    assert.equal(loaded.status, 200, JSON.stringify(loaded.body));
    assert.equal(loaded.body.model.speculative, "lookup");
    assert.equal(loaded.body.model.draft_model, undefined);
    const prompt = "abcdefghijklmnopqrstuvwxyz".repeat(2) + "abc";
    assert.equal(await run({ prompt, max_tokens: 30 }), expectedContinuation(prompt, 30));
    const g = (await d.status()).generation;
    assert.ok(g.accepted_draft_tokens >= 20, JSON.stringify(g));
  });
});

describe("speculative decoding with --parallel 2: each sequence drafts with its own draft sequence", { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-spec-parallel-"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    await copyFile(await tinyModel(), join(dir, "tiny-draft.gguf"));
    d = await startTestDaemon({ modelsDirs: [dir], threads: 1, parallel: 2, model: join(dir, "tiny.gguf"), draftModel: join(dir, "tiny-draft.gguf") });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("--draft-model loads the start-up model with its draft; two greedy generations at once both get their exact text", async () => {
    await waitUntil(async () => (await d.status()).state === "idle", 60_000, "the start-up model and its draft loaded");
    const status = await d.status();
    assert.equal(status.model.speculative, "draft");
    assert.equal(status.model.parallel, 2);
    const prompts = ["abc", "klmnop", "x", "ABCDEF"];
    for (let round = 0; round < 2; round++) {
      const texts = await Promise.all(
        prompts.map(async (prompt) => {
          const r = await d.post("/run_prompt", { prompt, raw: true, temperature: 0, max_tokens: 48 });
          assert.equal(r.status, 200);
          return r.text();
        }),
      );
      assert.deepEqual(texts, prompts.map((p) => expectedContinuation(p, 48)));
    }
    const metrics = await (await d.get("/metrics")).text();
    assert.ok(Number(/^kekahyde_draft_tokens_accepted_total (\d+)$/m.exec(metrics)?.[1]) >= 8 * 30, metrics.match(/kekahyde_draft.*$/gm)?.join("\n"));
  });
});

