import assert from "node:assert/strict";
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { ModelPlan } from "../src/domain/models.ts";
import { createProcessEngine, type EngineExitReason } from "../src/engine/process/processEngine.ts";
import { KekahydeError } from "../src/errors.ts";
import { expectedContinuation } from "../src/gguf/charModel.ts";
import { CRASH_CLASSES } from "../src/gguf/craftedModels.ts";
import { isAlive } from "./helpers/daemonProcess.ts";
import { FIXTURES, slowModel, tinyModel } from "./helpers/fixtures.ts";

/**
 * The process boundary itself, below the machines: files that kill llama.cpp natively (here written and
 * handed to the engine without the daemon's bounded check, which refuses them first in real use) end their
 * engine process with a crash error that says how, and the process holding the engine goes on.
 */

/** A plan made by hand, as if the bounded check had let the file through. */
async function unchecked(path: string): Promise<ModelPlan> {
  const { size } = await stat(path);
  return { path, name: null, architecture: "llama", fileSize: size, mtimeMs: 0, vocabularySize: 0, trainContextSize: 64, contextSize: 64, sequences: 1, bytes: 0, weightsBytes: 0, kvCacheBytes: 0, freeBytes: 0, onGpu: false };
}

async function craftedFile(name: string): Promise<string> {
  const dir = join(FIXTURES, "crafted");
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.gguf`);
  await CRASH_CLASSES.find((c) => c.name === name)!.write(path);
  return path;
}

describe("the engine process boundary", () => {
  const exits: EngineExitReason[] = [];
  const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: false, onEngineExit: (reason) => exits.push(reason) });
  after(() => engine.dispose());
  const signal = new AbortController().signal;

  for (const [name, how] of [
    ["attn_q-i32", /was killed by SIGSEGV/],
    ["head-count-0", /was killed by SIGABRT; llama\.cpp said: .*GGML_ASSERT/],
    ["vocab-duplicate-pair", /was killed by SIGABRT; llama\.cpp said: .*GGML_ASSERT\(id_to_token\.size\(\) == token_to_id\.size\(\)\)/],
  ] as const) {
    it(`contains a native crash (${name}): the load fails with what killed the engine, and the engine serves the next load`, async () => {
      const plan = await unchecked(await craftedFile(name));
      await assert.rejects(engine.load(plan, { signal }), (e: KekahydeError) => {
        assert.equal(e.code, "ENGINE_CRASHED");
        assert.match(e.message, how);
        assert.match(e.message, new RegExp(`${name}\\.gguf`), "names the file");
        return true;
      });
      assert.equal(exits.at(-1), "crash");
      const model = await engine.load(await unchecked(await tinyModel()), { signal });
      const result = await model.generate({ prompt: "abc", raw: true, maxTokens: 6, sampling: { temperature: 0 }, signal });
      assert.equal(result.text, expectedContinuation("abc", 6));
      await model.dispose();
      assert.equal(isAlive(model.info.engine_pid), false, "disposing a model ends its engine process");
    });
  }

  it("a load that exceeds --max-load-time is ended with its process, as load_timeout", async () => {
    const loadExits: EngineExitReason[] = [];
    // 20 ms: far below what loading the slow model takes anywhere (seconds here, with its warm-up decode).
    const limited = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: false, maxLoadMs: 20, onEngineExit: (reason) => loadExits.push(reason) });
    try {
      const plan = await unchecked(await slowModel());
      const loading = limited.load(plan, { signal });
      // The engine process is started at once (no spare): the only one alive now is the one loading.
      const [pid] = limited.pids();
      assert.ok(pid > 0 && pid !== process.pid, `an engine process for the load (${pid})`);
      await assert.rejects(loading, (e: KekahydeError) => {
        assert.equal(e.code, "ENGINE_TIMEOUT");
        assert.match(e.message, /^Loading kekahyde-char-slow-\w+\.gguf took longer than 0\.02 s \(--max-load-time\); its engine process was stopped\./);
        assert.equal(e.details.reason, "load_timeout");
        return true;
      });
      assert.deepEqual(loadExits, ["load_timeout"], "counted once, as load_timeout");
      assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "the engine process is gone");
      assert.deepEqual(limited.pids(), [], "no engine process left");
    } finally {
      await limited.dispose();
    }
  });

  it("an abort after a generation has ended does nothing: the model's engine lives on", async () => {
    const quick = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: false, abortGraceMs: 200 });
    try {
      const model = await quick.load(await unchecked(await tinyModel()), { signal });
      const request = new AbortController();
      const first = await model.generate({ prompt: "abc", raw: true, maxTokens: 4, sampling: { temperature: 0 }, signal: request.signal });
      assert.equal(first.text, expectedContinuation("abc", 4));
      // What the runtime does when it releases a job: its actor stops, which aborts the (ended) request.
      request.abort();
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(isAlive(model.info.engine_pid), true, "not killed as a stuck generation");
      const second = await model.generate({ prompt: "K", raw: true, maxTokens: 4, sampling: { temperature: 0 }, signal });
      assert.equal(second.text, expectedContinuation("K", 4));
    } finally {
      await quick.dispose();
    }
  });

  it("a generation that does not stop when asked is ended with its process, as stuck", async () => {
    const stuckExits: EngineExitReason[] = [];
    const quick = createProcessEngine({ gpu: "off", threads: 1, contextSize: 256, spare: false, abortGraceMs: 300, onEngineExit: (reason) => stuckExits.push(reason) });
    try {
      const model = await quick.load(await unchecked(await craftedFile("chat-template-loop-2m")), { signal });
      const request = new AbortController();
      const chat = model.generate({ prompt: "hi", raw: false, sampling: {}, signal: request.signal });
      await new Promise((r) => setTimeout(r, 300)); // rendering the looping template now
      request.abort();
      await assert.rejects(chat, (e: KekahydeError) => e.code === "ENGINE_TIMEOUT" && /did not stop within 0\.3 s/.test(e.message));
      assert.equal((await model.lost).code, "ENGINE_TIMEOUT");
      assert.equal(isAlive(model.info.engine_pid), false);
      assert.deepEqual(stuckExits, ["stuck"], "one exit reported, as stuck (what /metrics counts)");
    } finally {
      await quick.dispose();
    }
  });
});
