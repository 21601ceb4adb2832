import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { expectedContinuation } from "../src/gguf/charModel.ts";
import { CRASH_CLASSES } from "../testing/gguf/craftedModels.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { engineProcessesOf, isAlive, killStartedDaemons, spawnDaemon } from "../testing/daemonProcess.ts";
import { FIXTURES, skipModel, slowModel, tinyModel } from "../testing/fixtures.ts";
import { engineExits, exitsSince, oneExit } from "./helpers/metrics.ts";

/**
 * One bad model file must not take the daemon down (issue 13). Every test here runs the real engine in real
 * engine processes: crafted files are refused before any engine starts, what only the engine can reveal
 * (a looping chat template, a killed process) ends that model's engine process and nothing else, and engine
 * processes never outlive the daemon.
 */

const crafted = async (name: string): Promise<string> => {
  const c = CRASH_CLASSES.find((k) => k.name === name);
  assert.ok(c, `crafted class ${name}`);
  const dir = join(FIXTURES, "crafted");
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.gguf`);
  await c.write(path);
  return path;
};

const json = async (res: Response) => (await res.json()) as Record<string, any>;

/** The model loaded beforehand (the letter-skipping one): its exact text proves the daemon and its other models go on serving. */
async function assertGoodModelServes(d: { post: TestDaemon["post"] }, max_tokens = 8, what = ""): Promise<void> {
  const res = await d.post("/run_prompt", { model: "good", prompt: "abc", raw: true, max_tokens });
  assert.equal(res.status, 200, what);
  assert.equal(await res.text(), expectedContinuation("abc", max_tokens, 2), what);
}

/** The daemon answers /health at once, and the model loaded beforehand its exact (short) text. */
async function assertDaemonServes(d: { get: TestDaemon["get"]; post: TestDaemon["post"] }, what: string): Promise<void> {
  const started = performance.now();
  const health = await d.get("/health");
  assert.equal(health.status, 200, `${what}: /health`);
  assert.deepEqual(await health.json(), { ok: true }, `${what}: /health`);
  assert.ok(performance.now() - started < 1000, `${what}: /health took ${(performance.now() - started).toFixed(0)} ms`);
  await assertGoodModelServes(d, 3, what);
}

/** What an engine killed by SIGKILL while running the slow model says, in every route's shape. */
const KILLED_SLOW = /engine process for .*slow.* was killed by SIGKILL/;

describe("a daemon whose engines run in their own processes", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ maxModels: 3, keepAliveMs: -1, maxFirstTokenSeconds: 3 });
    assert.equal((await d.post("/load_model", { path: await skipModel(), name: "good" })).status, 200);
  });
  after(() => d?.close());

  it("refuses every crafted file the bounded check can judge with 422 and its reason, and keeps serving", async () => {
    const refused = CRASH_CLASSES.filter((c) => c.expected === "refused");
    assert.ok(refused.length >= 25, `${refused.length} crafted classes`);
    const exitsBefore = await engineExits(d.get);
    for (const c of refused) {
      const res = await d.post("/load_model", { path: await crafted(c.name), name: c.name });
      const body = await json(res);
      assert.equal(res.status, 422, `${c.name}: ${JSON.stringify(body)}`);
      assert.equal(body.code, "MODEL_INVALID");
      if (c.mentions) assert.match(body.message, c.mentions, c.name);
      const started = performance.now();
      const status = await d.status();
      assert.ok(performance.now() - started < 1000);
      assert.equal(status.last_error.code, "MODEL_INVALID", `${c.name}: /status records the refusal`);
      assert.deepEqual(status.models.map((m: { name: string }) => m.name), ["good"]);
      // Throughout, not only at the end (issue 13): the other model generates its exact text after every file.
      await assertDaemonServes(d, `after ${c.name}`);
    }
    await assertGoodModelServes(d);
    assert.deepEqual(exitsSince(exitsBefore, await engineExits(d.get)), oneExit("none"), "refused before any engine started: no engine process ended");
  });

  it("a chat template that loops: /status keeps answering in under 100 ms, the request ends with a clear timeout, the model is loaded again", async () => {
    assert.equal((await d.post("/load_model", { path: await crafted("chat-template-loop-2m"), name: "loop" })).status, 200, "the template is only rendered for a chat");
    const exitsBefore = await engineExits(d.get);
    const loopPid = (await d.status()).models.find((m: { name: string }) => m.name === "loop").engine_pid as number;
    const started = performance.now();
    const chat = d.post("/run_prompt", { model: "loop", prompt: "hi" });
    const answers: number[] = [];
    let answered = false;
    void chat.then(() => (answered = true));
    while (!answered) {
      const t = performance.now();
      await d.status();
      answers.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 50)); // pacing: /status is measured every 50 ms while the engine is stuck
    }
    answers.sort((x, y) => x - y);
    const slowest = answers.at(-1)!;
    const p90 = answers[Math.floor(answers.length * 0.9)];
    const res = await chat;
    const body = await json(res);
    assert.equal(res.status, 504, JSON.stringify(body));
    assert.equal(body.code, "ENGINE_TIMEOUT");
    assert.match(body.message, /No first token within 3 s \(--max-first-token-time\)/);
    // Counted when the process ended, before its request was answered.
    assert.deepEqual(exitsSince(exitsBefore, await engineExits(d.get)), oneExit("first_token_timeout"), "/metrics counts one engine exit, a first-token timeout");
    const took = performance.now() - started;
    assert.ok(took > 2_500 && took < 15_000, `ended after ${took.toFixed(0)} ms`);
    // In-process, the event loop froze for 60 s here. Nine answers in ten within 100 ms, none past a second:
    // every single one under 100 ms failed now and then on a 2-core machine busy with other work (114-197 ms).
    assert.ok(answers.length >= 10, `${answers.length} answers while the engine was stuck`);
    assert.ok(p90 < 100, `/status took ${p90.toFixed(1)} ms at the 90th percentile while the engine was stuck`);
    assert.ok(slowest < 1000, `/status took up to ${slowest.toFixed(1)} ms while the engine was stuck`);
    // One request cannot take a model from everyone (issue 21): the runtime loads it again in a new process.
    const loop = async () => (await d.status()).models.find((m: { name: string }) => m.name === "loop");
    await waitUntil(async () => (await loop())?.state === "idle" && (await loop())?.engine_pid !== loopPid, 15_000, "the model loaded again");
    assert.equal((await d.status()).last_error.code, "ENGINE_TIMEOUT");
    assert.equal(isAlive(loopPid), false);
    await assertGoodModelServes(d);
    assert.equal((await d.post("/unload_model", { model: "loop" })).status, 200);
  });

  it("an engine process killed mid-generation: its running client gets the crash, the model is loaded again and serves the waiting one", async () => {
    const path = await slowModel();
    assert.equal((await d.post("/load_model", { path, name: "victim" })).status, 200);
    const victim = () => d.status().then((s) => s.models.find((m: { name: string }) => m.name === "victim"));
    const pid = (await victim()).engine_pid as number;
    assert.ok(pid > 0 && pid !== process.pid, `its own engine process (${pid})`);
    const running = d.post("/run_prompt", { model: "victim", prompt: "abc", raw: true, max_tokens: 5000 });
    await waitUntil(async () => (await victim())?.state === "generating", 10_000, "generating");
    const waiting = d.post("/run_prompt", { model: "victim", prompt: "K", raw: true, max_tokens: 5 });
    await waitUntil(async () => (await victim())?.queue_length === 1, 10_000, "queued");
    const exitsBefore = await engineExits(d.get);
    process.kill(pid, "SIGKILL");
    const crashed = await running;
    const body = await json(crashed);
    assert.equal(crashed.status, 500, JSON.stringify(body));
    assert.equal(body.code, "ENGINE_CRASHED");
    assert.match(body.message, KILLED_SLOW);
    const served = await waiting;
    assert.equal(served.status, 200, "the waiting request is served by the model loaded again");
    assert.equal(await served.text(), expectedContinuation("K", 5));
    const status = await d.status();
    assert.equal(status.last_error.code, "ENGINE_CRASHED");
    assert.deepEqual(exitsSince(exitsBefore, await engineExits(d.get)), oneExit("crash"), "/metrics counts one engine exit, a crash");
    assert.equal(isAlive(pid), false);
    const again = await victim();
    assert.ok(again, "the victim is loaded again");
    assert.notEqual(again.engine_pid, pid, "in a new engine process");
    await assertGoodModelServes(d);
    const next = await d.post("/run_prompt", { model: "victim", prompt: "abc", raw: true, max_tokens: 6 });
    assert.equal(await next.text(), expectedContinuation("abc", 6));
  });

  it("an engine process killed mid-generation: OpenAI's and Ollama's clients get the crash in their own error shapes", async () => {
    // The test before loaded the victim again (a file lost once while generating is not quarantined).
    const victim = () => d.status().then((s) => s.models.find((m: { name: string }) => m.name === "victim"));
    if (!(await victim())) assert.equal((await d.post("/load_model", { path: await slowModel(), name: "victim" })).status, 200);
    const pid = (await victim())?.engine_pid as number;
    assert.ok(pid > 0 && pid !== process.pid, `its own engine process (${pid})`);
    const openai = d.post("/v1/chat/completions", { model: "victim", messages: [{ role: "user", content: "abc" }], max_tokens: 5000 });
    await waitUntil(async () => (await victim())?.state === "generating", 10_000, "generating");
    const exitsBefore = await engineExits(d.get);
    process.kill(pid, "SIGKILL");
    const o = await openai;
    const openaiBody = await json(o);
    assert.equal(o.status, 500, JSON.stringify(openaiBody));
    assert.deepEqual(Object.keys(openaiBody), ["error"], JSON.stringify(openaiBody));
    assert.equal(openaiBody.error.code, "engine_crashed");
    assert.equal(openaiBody.error.type, "server_error");
    assert.equal(openaiBody.error.param, null);
    assert.match(openaiBody.error.message, KILLED_SLOW);
    // Loaded again by itself: Ollama's client, generating when its engine is killed, gets its own shape.
    await waitUntil(async () => (await victim())?.state === "idle", 15_000, "the victim loaded again");
    const pid2 = (await victim()).engine_pid as number;
    const ollama = d.post("/api/generate", { model: "victim", prompt: "abc", raw: true, stream: false, options: { num_predict: 5000 } });
    await waitUntil(async () => (await victim())?.state === "generating", 10_000, "generating");
    process.kill(pid2, "SIGKILL");
    const l = await ollama;
    const ollamaBody = await json(l);
    assert.equal(l.status, 500, JSON.stringify(ollamaBody));
    assert.deepEqual(Object.keys(ollamaBody), ["error"], JSON.stringify(ollamaBody));
    assert.equal(typeof ollamaBody.error, "string");
    assert.match(ollamaBody.error, KILLED_SLOW);
    assert.deepEqual(exitsSince(exitsBefore, await engineExits(d.get)), { ...oneExit("crash"), crash: 2 }, "/metrics counts two engine exits, crashes");
    await assertGoodModelServes(d);
  });

  it("shows each model's engine process and its measured memory beside the estimate", async () => {
    await waitUntil(async () => (await d.status()).models.every((m: { engine_rss_bytes: number | null }) => m.engine_rss_bytes !== null), 5_000, "a sample of every engine");
    const status = await d.status();
    for (const m of status.models) {
      assert.ok(m.engine_rss_bytes > 10 * 1024 * 1024, `${m.name}: ${m.engine_rss_bytes} bytes resident`);
      assert.ok(m.memory_bytes > 0, "the estimate beside it");
    }
    assert.ok(status.memory_usage > status.models.reduce((n: number, m: { engine_rss_bytes: number }) => n + m.engine_rss_bytes, 0), "memory_usage counts the daemon and its engines");
    assert.equal(status.model_loaded, true);
  });
});

describe("the spare engine process", () => {
  it("is started ahead, serves the first load, and is replaced by a new one", async () => {
    const d = await startTestDaemon({ spareEngine: true });
    try {
      let spares: number[] = [];
      await waitUntil(() => (spares = engineProcessesOf(process.pid).filter(isAlive)).length === 1, 15_000, "a spare engine process");
      const [spare] = spares;
      assert.equal((await d.post("/load_model", { path: await tinyModel() })).status, 200);
      assert.equal((await d.status()).models[0].engine_pid, spare, "the load took the spare process");
      await waitUntil(() => engineProcessesOf(process.pid).filter((p) => p !== spare && isAlive(p)).length === 1, 15_000, "a new spare behind it");
    } finally {
      await d.close();
    }
  });

  it("goes to one of two loads made at once; each model gets a process of its own and answers with its own weights", async () => {
    const d = await startTestDaemon({ spareEngine: true, maxModels: 2 });
    try {
      await waitUntil(() => engineProcessesOf(process.pid).filter(isAlive).length === 1, 15_000, "a spare engine process");
      const loads = await Promise.all([
        d.post("/load_model", { path: await tinyModel(), name: "tiny" }),
        d.post("/load_model", { path: await skipModel(), name: "skip" }),
      ]);
      assert.deepEqual(loads.map((r) => r.status), [200, 200]);
      const pids = (await d.status()).models.map((m: { engine_pid: number }) => m.engine_pid);
      assert.equal(new Set(pids).size, 2, `engine processes ${pids.join(", ")}`);
      const ask = async (model: string) => (await d.post("/run_prompt", { model, prompt: "abc", raw: true, max_tokens: 6 })).text();
      assert.equal(await ask("tiny"), expectedContinuation("abc", 6, 1));
      assert.equal(await ask("skip"), expectedContinuation("abc", 6, 2));
    } finally {
      await d.close();
    }
  });
});

describe("a generation whose engine stops producing tokens (--max-stall-time)", () => {
  it("ends with event: error ENGINE_TIMEOUT about a second after the last token, its engine process killed, counted as stall", async () => {
    const d = await startTestDaemon({ maxStallSeconds: 1 });
    let frozen: number | null = null;
    try {
      assert.equal((await d.post("/load_model", { path: await slowModel(), name: "stalls" })).status, 200);
      const pid = (await d.status()).models[0].engine_pid as number;
      const before = await engineExits(d.get);
      const res = await d.post("/run_prompt", { model: "stalls", prompt: "abc", raw: true, max_tokens: 5000, stream: true }, { accept: "text/event-stream" });
      assert.equal(res.status, 200);
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let events = "";
      while (!events.includes("data: {\"text\"")) events += (await reader.read()).value ?? "";
      // Its first tokens have come: the engine now freezes (SIGSTOP), alive but silent.
      process.kill(pid, "SIGSTOP");
      frozen = pid;
      const frozenAt = performance.now();
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) events += chunk.value;
      const took = performance.now() - frozenAt;
      const error = /event: error\ndata: (.*)\n/.exec(events);
      assert.ok(error, events.slice(-500));
      const body = JSON.parse(error[1]) as { code: string; message: string };
      assert.equal(body.code, "ENGINE_TIMEOUT");
      assert.match(body.message, /^No token for 1 s while generating \(--max-stall-time\)/);
      assert.ok(took < 5_000, `ended ${took.toFixed(0)} ms after the engine froze`);
      assert.equal(isAlive(pid), false, "the frozen engine process was killed");
      frozen = null;
      // The model was lost under a running request: the daemon unloads it, or loads it again in a fresh process.
      await waitUntil(async () => (await d.status()).models.every((m: { engine_pid: number | null }) => m.engine_pid !== pid), 10_000, "the frozen engine's model gone");
      assert.equal((await d.status()).last_error.code, "ENGINE_TIMEOUT");
      assert.equal(exitsSince(before, await engineExits(d.get)).stall, 1, "/metrics counts the exit as stall");
    } finally {
      if (frozen !== null && isAlive(frozen)) process.kill(frozen, "SIGKILL");
      await d.close();
    }
  });
});

describe("engine processes end with the daemon", () => {
  after(killStartedDaemons);

  it("SIGKILL of the daemon leaves no engine process behind, even one stuck in a chat template", async () => {
    const daemon = await spawnDaemon(["--max-models", "2", "--max-first-token-time", "600"]);
    assert.equal((await daemon.post("/load_model", { path: await tinyModel() })).status, 200);
    assert.equal((await daemon.post("/load_model", { path: await crafted("chat-template-loop-2m"), name: "loop" })).status, 200);
    void daemon.post("/run_prompt", { model: "loop", prompt: "hi" }).catch(() => {});
    // The loop's engine is then stuck rendering the template: its request has started.
    await waitUntil(async () => (await daemon.status()).models.find((m: { name: string }) => m.name === "loop")?.state === "generating", 10_000, "the looping chat started");
    const engines = engineProcessesOf(daemon.child.pid!);
    assert.ok(engines.length >= 2, `engine processes ${engines.join(", ")}`);
    daemon.child.kill("SIGKILL");
    await daemon.exited;
    await waitUntil(() => !engines.some(isAlive), 5_000, `every engine process to end by itself (alive: ${engines.filter(isAlive).join(", ")})`);
  });

  it("SIGTERM under load answers every client and exits cleanly, its engine processes with it", async () => {
    const daemon = await spawnDaemon(["--parallel", "2"]);
    assert.equal((await daemon.post("/load_model", { path: await slowModel() })).status, 200);
    const clients = [0, 1, 2, 3].map((i) => daemon.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5000, stream: i % 2 === 0 }).then(async (r) => ({ status: r.status, body: await r.text() })));
    await waitUntil(async () => (await daemon.status()).models[0]?.running === 2, 10_000, "two generating");
    const engines = engineProcessesOf(daemon.child.pid!);
    assert.ok(engines.length >= 1);
    daemon.child.kill("SIGTERM");
    const answers = await Promise.all(clients);
    for (const a of answers) assert.ok([200, 503].includes(a.status), `answered ${a.status}: ${a.body.slice(0, 200)}`);
    assert.equal(await daemon.exited, 0, daemon.stderr());
    assert.deepEqual(engines.filter(isAlive), [], "no engine process left");
  });
});
