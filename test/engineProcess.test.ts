import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { ModelPlan } from "../src/domain/models.ts";
import { createProcessEngine, type EngineExitReason, type ProcessEngine } from "../src/engine/process/processEngine.ts";
import { KekahydeError } from "../src/errors.ts";
import { waitUntil } from "./helpers/daemon.ts";
import { expectedContinuation } from "../src/gguf/charModel.ts";
import { CRASH_CLASSES } from "../testing/gguf/craftedModels.ts";
import { isAlive } from "../testing/daemonProcess.ts";
import { FIXTURES, slowModel, tinyModel } from "../testing/fixtures.ts";

/**
 * The process boundary itself, below the machines: files that kill llama.cpp natively (here written and
 * handed to the engine without the daemon's bounded check, which refuses them first in real use) end their
 * engine process with a crash error that says how, and the process holding the engine goes on.
 */

/** A plan made by hand, as if the bounded check had let the file through. */
async function unchecked(path: string): Promise<ModelPlan> {
  const { size, mtimeMs } = await stat(path);
  return { path, name: null, architecture: "llama", fileSize: size, mtimeMs, vocabularySize: 0, trainContextSize: 64, contextSize: 64, sequences: 1, bytes: 0, weightsBytes: 0, kvCacheBytes: 0, freeBytes: 0, onGpu: false };
}

async function craftedFile(name: string): Promise<string> {
  const dir = join(FIXTURES, "crafted");
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.gguf`);
  await CRASH_CLASSES.find((c) => c.name === name)!.write(path);
  return path;
}

/** The promise's outcome, or a rejection saying it was still pending after `ms` (a hang fails, not blocks, the test). */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** The CPU time (clock ticks, utime + stime, all its threads) a process has used, from /proc (Linux); null without /proc. */
async function cpuTicks(pid: number): Promise<number | null> {
  try {
    const line = await readFile(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    const fields = line.slice(line.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

/** Freezes one of the engine's own processes (SIGSTOP): it lives on, but never answers. */
function freeze(engine: ProcessEngine, pid: number): void {
  assert.ok(engine.pids().includes(pid), `${pid} is one of this engine's processes`);
  process.kill(pid, "SIGSTOP");
}

/** Ends the engine with its processes, frozen ones woken first so that they can be asked to end. */
async function disposeAll(engine: ProcessEngine): Promise<void> {
  for (const pid of engine.pids()) process.kill(pid, "SIGCONT");
  await engine.dispose();
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
      // What must not happen: a kill after the 200 ms abort grace. Three graces pass first (a fixed pause on
      // purpose: the engine process must still be alive after 600 ms).
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
      const pid = model.info.engine_pid;
      const idle = await cpuTicks(pid);
      const chat = model.generate({ prompt: "hi", raw: false, sampling: {}, signal: request.signal });
      // The abort must find the engine stuck rendering the template: wait until its process has spent 100 ms
      // of CPU on this generation (no token comes, so that is the template). Without /proc, a fixed 300 ms.
      if (idle === null) await new Promise((r) => setTimeout(r, 300));
      else await waitUntil(async () => ((await cpuTicks(pid)) ?? idle) - idle >= 10, 10_000, "the engine process busy rendering the chat template");
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

describe("a model file replaced after the daemon checked it", () => {
  const signal = new AbortController().signal;

  /** A copy of the tiny model in a folder of its own, planned (checked) as the daemon plans a load. */
  async function plannedCopy(engine: ProcessEngine): Promise<{ dir: string; path: string; plan: ModelPlan }> {
    const dir = await mkdtemp(join(tmpdir(), "kekahyde-swap-"));
    const path = join(dir, "model.gguf");
    await copyFile(await tinyModel(), path);
    return { dir, path, plan: await engine.plan(path, {}) };
  }

  it("a FIFO renamed over it is refused at once, never opened (which would block until the load limit)", async () => {
    // A load limit, so that the engine that did open it (before the fix) ends instead of blocking for ever.
    const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: false, maxLoadMs: 20_000 });
    const { dir, path, plan } = await plannedCopy(engine);
    try {
      const fifo = join(dir, "fifo");
      execFileSync("mkfifo", [fifo]);
      await rename(fifo, path);
      const started = performance.now();
      await assert.rejects(engine.load(plan, { signal }), (e: KekahydeError) => {
        assert.equal(e.code, "MODEL_INVALID", e.message);
        assert.equal(e.message, `${path} changed since it was checked (it is now a FIFO); load it again.`);
        return true;
      });
      const took = performance.now() - started;
      assert.ok(took < 10_000, `refused after ${took.toFixed(0)} ms`);
      await waitUntil(() => engine.pids().length === 0, 5_000, "the refused load's engine process to end");
    } finally {
      await engine.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("another model copied over it is refused as a different file; a fresh plan of it loads", async () => {
    const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: false, maxLoadMs: 20_000 });
    const { dir, path, plan } = await plannedCopy(engine);
    try {
      await copyFile(await slowModel(), path);
      await assert.rejects(engine.load(plan, { signal }), (e: KekahydeError) => {
        assert.equal(e.code, "MODEL_INVALID", e.message);
        assert.match(e.message, /model\.gguf changed since it was checked \(it is now a different file: \d+ bytes modified .*, not \d+ bytes modified .*\); load it again\.$/);
        return true;
      });
      const model = await engine.load(await engine.plan(path, {}), { signal });
      assert.equal(model.info.size_bytes, (await stat(await slowModel())).size, "what is there now, checked again");
    } finally {
      await engine.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("an engine process that never says it is ready", () => {
  const signal = new AbortController().signal;

  it("a frozen spare does not hold a load past --max-load-time: ENGINE_TIMEOUT, and no process left", async () => {
    const exits: EngineExitReason[] = [];
    const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: true, maxLoadMs: 3_000, onEngineExit: (reason) => exits.push(reason) });
    try {
      const [spare] = engine.pids();
      freeze(engine, spare); // before it could say it is ready
      const plan = await unchecked(await tinyModel());
      const started = performance.now();
      await assert.rejects(within(10_000, engine.load(plan, { signal })), (e: KekahydeError) => {
        assert.equal(e.code, "ENGINE_TIMEOUT", e.message);
        assert.match(e.message, /^Loading kekahyde-char-tiny-\w+\.gguf took longer than 3 s \(--max-load-time\); its engine process was stopped\. The engine process had not started in time/);
        assert.equal(e.details.reason, "load_timeout");
        return true;
      });
      const took = performance.now() - started;
      assert.ok(took < 6_000, `ended after ${took.toFixed(0)} ms`);
      assert.equal(isAlive(spare), false, "the frozen spare was killed");
      assert.deepEqual(engine.pids(), [], "no engine process left");
      assert.deepEqual(exits, ["load_timeout"], "counted once, as load_timeout");
    } finally {
      await disposeAll(engine);
    }
  });

  it("a ready engine process whose load then exceeds --max-load-time: the load's own timeout, not the start's", async () => {
    const exits: EngineExitReason[] = [];
    // gpu auto: planning waits for the spare to say what it runs on, so the load below gets a ready process.
    const engine = createProcessEngine({ gpu: "auto", threads: 1, contextSize: 64, spare: true, maxStartMs: 60_000, maxLoadMs: 20, onEngineExit: (reason) => exits.push(reason) });
    try {
      const plan = await engine.plan(await slowModel(), {});
      const ready = engine.pids();
      await assert.rejects(engine.load(plan, { signal }), (e: KekahydeError) => {
        assert.equal(e.code, "ENGINE_TIMEOUT", e.message);
        assert.match(e.message, /^Loading kekahyde-char-slow-\w+\.gguf took longer than 0\.02 s \(--max-load-time\); its engine process was stopped\. Raise --max-load-time/);
        return true;
      });
      assert.deepEqual(exits, ["load_timeout"]);
      for (const pid of ready) assert.equal(isAlive(pid), false, `the spare that took the load (${pid}) is gone`);
    } finally {
      await engine.dispose();
    }
  });

  it("a spare frozen past its start limit is killed and the load goes on in a fresh process", async () => {
    // A start limit well above what a start takes here (about 1.5 s on a busy 2-core machine).
    const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 64, spare: true, maxStartMs: 5_000, maxLoadMs: 60_000 });
    try {
      const [spare] = engine.pids();
      freeze(engine, spare);
      const model = await within(30_000, engine.load(await unchecked(await tinyModel()), { signal }));
      assert.notEqual(model.info.engine_pid, spare, "loaded in a fresh process");
      assert.equal(isAlive(spare), false, "the frozen spare was killed");
      const result = await model.generate({ prompt: "abc", raw: true, maxTokens: 4, sampling: { temperature: 0 }, signal });
      assert.equal(result.text, expectedContinuation("abc", 4));
    } finally {
      await disposeAll(engine);
    }
  });

  it("a frozen spare does not hold planning (which asks it what GPU it runs on): it is replaced", async () => {
    // gpu auto: planning asks the spare whether it has a GPU (with gpu off it never asks).
    const engine = createProcessEngine({ gpu: "auto", threads: 1, contextSize: 64, spare: true, maxStartMs: 5_000 });
    try {
      const [spare] = engine.pids();
      freeze(engine, spare);
      const plan = await within(30_000, engine.plan(await tinyModel(), {}));
      assert.equal(plan.contextSize, 64);
      assert.equal(isAlive(spare), false, "the frozen spare was killed");
      assert.ok(!engine.pids().includes(spare));
    } finally {
      await disposeAll(engine);
    }
  });
});

describe("a generation whose engine stops producing tokens", () => {
  const signal = new AbortController().signal;

  it("ends after --max-stall-time without a token, with its process, as stall", async () => {
    const exits: EngineExitReason[] = [];
    const engine = createProcessEngine({ gpu: "off", threads: 1, contextSize: 2048, spare: false, maxStallMs: 1_000, onEngineExit: (reason) => exits.push(reason) });
    try {
      const model = await engine.load(await unchecked(await slowModel()), { signal });
      const pid = model.info.engine_pid;
      // Tokens coming one after another never trip the limit.
      const quick = await model.generate({ prompt: "abc", raw: true, maxTokens: 40, sampling: { temperature: 0 }, signal });
      assert.equal(quick.text, expectedContinuation("abc", 40));
      let frozenAt = 0;
      const generation = model.generate({
        prompt: "abc",
        raw: true,
        maxTokens: 2000,
        sampling: { temperature: 0 },
        signal,
        onText: () => {
          if (frozenAt) return;
          frozenAt = performance.now();
          freeze(engine, pid); // after its first token
        },
      });
      await assert.rejects(within(10_000, generation), (e: KekahydeError) => {
        assert.equal(e.code, "ENGINE_TIMEOUT", e.message);
        assert.match(e.message, /^No token for 1 s while generating \(--max-stall-time\): the engine stopped after \d+ tokens? .*; the engine process was stopped and the model unloaded/);
        assert.equal(e.details.reason, "stall");
        return true;
      });
      const took = performance.now() - frozenAt;
      assert.ok(frozenAt > 0 && took < 4_000, `ended ${took.toFixed(0)} ms after the engine froze`);
      assert.equal((await model.lost).code, "ENGINE_TIMEOUT");
      assert.equal(isAlive(pid), false, "the frozen engine process was killed");
      assert.deepEqual(engine.pids(), []);
      assert.deepEqual(exits, ["stall"], "counted once, as stall");
    } finally {
      await disposeAll(engine);
    }
  });
});
