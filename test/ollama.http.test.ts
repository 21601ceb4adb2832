import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Ollama, type ChatResponse } from "ollama";
import { expectedChatReply, expectedContinuation, SOFT_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { fixtureModel, skipModel, slowModel, tinyModel } from "../testing/fixtures.ts";

/**
 * Ollama's own API, driven by the official `ollama` client against the real daemon and real generated models
 * in a models directory, loaded by name on first use: no /load_model call anywhere.
 */

describe("Ollama's API with the official ollama client", () => {
  let d: TestDaemon;
  let dir: string;
  let ollama: Ollama;
  const models = async () => (await d.status()).models.map((m: { name: string }) => m.name).sort();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-ollama-"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    await copyFile(await skipModel(), join(dir, "ace.gguf"));
    await copyFile(await slowModel(), join(dir, "slow.gguf"));
    await mkdir(join(dir, "soft"));
    await copyFile(await fixtureModel(SOFT_CHAR_MODEL), join(dir, "soft", "sampled.gguf"));
    d = await startTestDaemon({ modelsDirs: [dir], maxModels: 2 });
    ollama = new Ollama({ host: d.url });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("reports a version Copilot accepts", async () => {
    const { version } = await ollama.version();
    const [major, minor, patch] = version.split(".").map(Number);
    assert.ok(major > 0 || minor > 6 || (minor === 6 && patch >= 4), version);
  });

  it("lists the models directory by name, with their GGUF facts", async () => {
    const { models: listed } = await ollama.list();
    assert.deepEqual(listed.map((m) => m.name).sort(), ["ace:latest", "slow:latest", "soft:sampled", "tiny:latest"]);
    const tiny = listed.find((m) => m.name === "tiny:latest")!;
    assert.equal(tiny.details.family, "llama");
    assert.equal(tiny.details.format, "gguf");
    assert.match(tiny.details.parameter_size, /^\d+(\.\d+)?[KMB]$/);
    assert.ok(tiny.details.quantization_level.length > 0);
    assert.ok(tiny.size > 1_000_000);
    assert.deepEqual(await models(), [], "listing loads nothing");
  });

  it("serves a file dropped into the models directory while it runs, without a restart", async () => {
    await copyFile(await tinyModel(), join(dir, "late.gguf"));
    assert.ok((await ollama.list()).models.some((m) => m.name === "late:latest"));
    const r = await ollama.generate({ model: "late", prompt: "x", raw: true, options: { num_predict: 3, temperature: 0 } });
    assert.equal(r.response, expectedContinuation("x", 3));
    await ollama.generate({ model: "late", prompt: "", keep_alive: 0 });
  });

  it("shows a model: its facts, template and what it can do today", async () => {
    const shown = await ollama.show({ model: "tiny" });
    assert.deepEqual(shown.capabilities, ["completion"], "no tools, embeddings or vision are claimed");
    assert.equal(shown.details.family, "llama");
    assert.equal((shown.model_info as unknown as Record<string, unknown>)["general.architecture"], "llama");
    assert.ok(typeof (shown.model_info as unknown as Record<string, unknown>)["llama.context_length"] === "number");
    assert.match(shown.template, /im_start/);
  });

  it("generates the exact text, loading the model by name on first use, with Ollama's counts and durations", async () => {
    const r = await ollama.generate({ model: "tiny", prompt: "abc", raw: true, options: { temperature: 0, num_predict: 8 } });
    assert.equal(r.response, expectedContinuation("abc", 8));
    assert.equal(r.done, true);
    assert.equal(r.done_reason, "length");
    assert.equal(r.eval_count, 8);
    assert.ok(r.prompt_eval_count > 0);
    assert.ok(r.total_duration > r.eval_duration && r.eval_duration > 0, "nanoseconds");
    assert.ok(r.load_duration > 0, "it was loaded for this request");
    assert.deepEqual(await models(), ["tiny"]);
  });

  it("streams a generation as NDJSON, the last object done", async () => {
    const parts = [];
    for await (const part of await ollama.generate({ model: "tiny:latest", prompt: "K", raw: true, stream: true, options: { num_predict: 12, temperature: 0 } })) parts.push(part);
    assert.equal(parts.map((p) => p.response).join(""), expectedContinuation("K", 12));
    assert.ok(parts.length > 2, `${parts.length} parts`);
    assert.equal(parts.at(-1)!.done, true);
    assert.equal(parts.at(-1)!.eval_count, 12);
    assert.ok(parts.slice(0, -1).every((p) => !p.done));
  });

  it("chats, streamed and not, in the model's own template", async () => {
    const r = await ollama.chat({ model: "tiny", messages: [{ role: "user", content: "Hi" }], options: { num_predict: 6 } });
    assert.deepEqual(r.message, { role: "assistant", content: expectedChatReply(6) });
    let text = "";
    let last: ChatResponse | undefined;
    for await (const part of await ollama.chat({ model: "tiny", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }, { role: "assistant", content: " abc" }, { role: "user", content: "More" }], stream: true, options: { num_predict: 9 } })) {
      text += part.message.content;
      last = part;
    }
    assert.equal(text, expectedChatReply(9));
    assert.equal(last!.done, true);
  });

  it("honours options: a seed reproduces a sampled text, num_predict bounds it", async () => {
    const sample = async (seed: number) =>
      (await ollama.generate({ model: "soft:sampled", prompt: "abc", raw: true, options: { seed, temperature: 1, top_k: 0, top_p: 1, min_p: 0, num_predict: 20 } })).response;
    const first = await sample(7);
    assert.equal(await sample(7), first);
    assert.ok([await sample(8), await sample(9), await sample(10)].some((t) => t !== first), "sampling really samples");
    const bounded = await ollama.generate({ model: "tiny", prompt: "abc", raw: true, options: { num_predict: 3, temperature: 0 } });
    assert.equal(bounded.eval_count, 3);
  });

  it("honours system, options.stop, format and num_ctx, and refuses images and think with a 400 naming them", async () => {
    // The char model answers the last prompt token: a system message changes the prompt, not that reply.
    const plain = await ollama.generate({ model: "tiny", prompt: "Hi", options: { num_predict: 5, temperature: 0 } });
    const withSystem = await ollama.generate({ model: "tiny", prompt: "Hi", system: "Be brief.", options: { num_predict: 5, temperature: 0 } });
    assert.equal(withSystem.response, plain.response);
    assert.ok(withSystem.prompt_eval_count > plain.prompt_eval_count + "Be brief.".length, "the system message is in the prompt");
    const stopped = await ollama.generate({ model: "tiny", prompt: "abc", raw: true, options: { num_predict: 20, temperature: 0, stop: ["h"] } });
    assert.equal(stopped.response, "defg");
    assert.equal(stopped.done_reason, "stop");
    const json = await ollama.generate({ model: "tiny", prompt: "x", raw: true, format: { type: "object", properties: { a: { type: "string", maxLength: 3 } }, required: ["a"] }, options: { temperature: 0 } });
    assert.deepEqual(Object.keys(JSON.parse(json.response ?? "")), ["a"], json.response);
    await ollama.generate({ model: "ace", prompt: "", keep_alive: 0 });
    await ollama.generate({ model: "ace", prompt: "a", raw: true, options: { num_predict: 1, num_ctx: 768 } });
    const ace = (await ollama.ps()).models.find((m) => m.name.startsWith("ace"));
    assert.equal((ace as unknown as { context_length: number }).context_length, 768, "num_ctx sets the context of the load it causes (llama.cpp pads it to 256)");
    const refused = async (body: Record<string, unknown>, field: string) => {
      const res = await fetch(`${d.url}/api/generate`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "tiny", prompt: "x", stream: false, ...body }) });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: string }).error, new RegExp(field));
    };
    await refused({ images: ["aGk="] }, "images");
    await refused({ think: true }, "think");
  });

  it("lists running models with their expiry and context, and unloads with keep_alive 0", async () => {
    const loaded = await ollama.generate({ model: "ace", prompt: "" });
    assert.equal(loaded.done_reason, "load", "an empty prompt loads the model");
    const ps = await ollama.ps();
    const ace = ps.models.find((m) => m.name === "ace:latest");
    assert.ok(ace, JSON.stringify(ps.models));
    assert.ok((ace as typeof ace & { context_length: number }).context_length > 0);
    assert.ok(new Date(ace.expires_at).getTime() > Date.now());
    assert.ok(ace.size > 0);
    const unloaded = await ollama.generate({ model: "ace", prompt: "", keep_alive: 0 });
    assert.equal(unloaded.done_reason, "unload");
    await waitUntil(async () => !(await ollama.ps()).models.some((m) => m.name === "ace:latest"), 5_000, "ace unloaded");
  });

  it("answers an unknown model with Ollama's 404, naming where models go and the close names", async () => {
    await assert.rejects(ollama.chat({ model: "tinyy", messages: [{ role: "user", content: "x" }] }), (e: Error & { status_code?: number }) => {
      assert.equal(e.status_code, 404);
      assert.match(e.message, /model "tinyy" not found: put tinyy\.gguf in a models directory .*close names: tiny/);
      return true;
    });
  });

  it("answers what it does not do with a clear 501 that says what to do instead", async () => {
    await assert.rejects(ollama.pull({ model: "llama3.2" }), (e: Error & { status_code?: number }) => e.status_code === 501 && /put the model's \.gguf file in a models directory/.test(e.message));
  });

  it("lets several requests wait for the one load of their model", async () => {
    await ollama.generate({ model: "tiny", prompt: "", keep_alive: 0 });
    await waitUntil(async () => !(await models()).includes("tiny"), 5_000, "tiny unloaded");
    const answers = await Promise.all(["a", "K", "3"].map((p) => ollama.generate({ model: "tiny", prompt: p, raw: true, options: { num_predict: 4, temperature: 0 } })));
    assert.deepEqual(answers.map((a) => a.response), ["a", "K", "3"].map((p) => expectedContinuation(p, 4)));
  });

  it("an aborted stream stops its generation in the engine, so the next request starts at once", async () => {
    const stream = await ollama.generate({ model: "slow", prompt: "abc", raw: true, stream: true, options: { num_predict: 5000 } });
    let parts = 0;
    try {
      for await (const _ of stream) if (++parts === 3) stream.abort();
    } catch {
      // the client ends its iteration with an abort error
    }
    await waitUntil(async () => (await d.status()).models.find((m: { name: string }) => m.name === "slow")?.state === "idle", 5_000, "the engine stopped");
    const started = performance.now();
    const next = await ollama.generate({ model: "slow", prompt: "K", raw: true, options: { num_predict: 4, temperature: 0 } });
    assert.equal(next.response, expectedContinuation("K", 4));
    assert.ok(performance.now() - started < 3_000);
  });

  it("POST /stop stops an Ollama request too", async () => {
    const stream = await ollama.chat({ model: "slow", messages: [{ role: "user", content: "go" }], stream: true, options: { num_predict: 5000 } });
    let stopped = false;
    let last: ChatResponse | undefined;
    for await (const part of stream) {
      last = part;
      if (!stopped) {
        stopped = true;
        assert.equal((await d.post("/stop", { model: "slow" })).status, 200);
      }
    }
    assert.equal(last!.done, true);
    assert.ok(last!.eval_count < 5000);
  });
});
