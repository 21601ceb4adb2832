// `npm run soak [-- options]`: the real daemon, in a process of its own, under mixed traffic for N minutes.
// Not a test: never run in CI. It reports every request by route and status, the requests that got no HTTP
// answer (lost: none are allowed), the resident memory slope of the daemon process and of each engine
// process, and the daemon's own /status and /metrics at the end. Results: bench/results/soak-<date>.json and
// a "Soak" section in docs/benchmarks.md. Options:
//   --minutes N        how long the traffic runs (default 20)
//   --concurrency N    requests in flight at most, the unload/load cycle included (default 8)
//   --sample-s N       seconds between memory samples (default 5)
//   --cycle-s N        seconds between unload/load cycles of the second model (default 60)
//   --seed N           the traffic's random seed (default 1)
//   --no-docs          leave docs/benchmarks.md as it is
//   --render FILE      no run: the report again from a saved bench/results/soak-*.json
//   --source, --patch FILE   how the daemon runs (bench/snapshot.ts; default: a compiled snapshot of src/)
//
// Traffic, per worker, with a pause of 50-500 ms between requests: /run_prompt raw and chat, answered whole or
// streamed (SSE) to the end, SSE streams cut by the client at a random point (some while still queued),
// /v1/chat/completions streamed (read to the end or cut) and whole, /stop (all or one model), /status,
// /health, /metrics. Two models are loaded (--max-models 2): "a", the tiny char model (under a millisecond a
// token), stays loaded for the whole run, so its engine process lives as long as the soak; "b", the slow char
// model (~10x the work per token, so that stops and cuts land mid-generation), is unloaded and loaded again
// every --cycle-s seconds once no request of the soak's is using it.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { createServer } from "node:net";
import { availableParallelism, cpus, totalmem } from "node:os";
import { join, relative } from "node:path";
import { slowModel, tinyModel } from "../testing/fixtures.ts";
import { launchOptions, prepareLaunch, ROOT } from "./snapshot.ts";
import { childrenOf } from "./daemonProcess.ts";

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const MINUTES = Number(opt("minutes", "20"));
const CONCURRENCY = Math.max(2, Number(opt("concurrency", "8")));
const SAMPLE_MS = Number(opt("sample-s", "5")) * 1000;
const CYCLE_MS = Number(opt("cycle-s", "60")) * 1000;
const SEED = Number(opt("seed", "1"));
/** Longest any request may go without its answer before it counts as lost. */
const REQUEST_TIMEOUT_MS = 180_000;

// ---- small helpers ---------------------------------------------------------------------------------------

/** mulberry32: the traffic is reproducible from its seed (timings are not). */
let seed = SEED >>> 0;
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const letters = (n: number) => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(random() * 26))).join("");

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** VmRSS of a process in bytes, or null when it has gone. */
function rssOf(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}


function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number | null {
  if (points.length < 3) return null;
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
  }
  return sxx === 0 ? null : sxy / sxx;
}

// ---- the requests and what became of them ----------------------------------------------------------------

/** What one request came to: an HTTP answer (whole, or cut by us), or lost. */
interface Outcome {
  route: string;
  /** "200", "503", "200 cut", "cut before the answer", "200 event:error ENGINE_TIMEOUT", "lost". */
  status: string;
  ms: number;
  lost?: { error: string; reusedSocket: boolean; at: string };
  code?: string;
}

const outcomes = new Map<string, Map<string, number>>();
const lost: Array<Outcome & { detail: string }> = [];
const unexpected: Array<{ route: string; status: string; code: string | undefined; body: string; at: string }> = [];
let inFlight = 0;
let maxInFlight = 0;
let startedAt = Date.now();
const sinceStart = () => round((Date.now() - startedAt) / 60_000, 3);

function record(o: Outcome, body = ""): void {
  const byStatus = outcomes.get(o.route) ?? new Map<string, number>();
  byStatus.set(o.status, (byStatus.get(o.status) ?? 0) + 1);
  outcomes.set(o.route, byStatus);
  if (o.lost) lost.push({ ...o, detail: `${o.lost.error}${o.lost.reusedSocket ? " (on a reused keep-alive socket)" : ""}` });
  // Statuses a well-behaved daemon gives under this traffic: answers, a full queue (503), a cut by us.
  else if (!/^(200|503)( cut)?$|^cut before the answer$/.test(o.status)) {
    if (unexpected.length < 200) unexpected.push({ route: o.route, status: o.status, code: o.code, body: body.slice(0, 300), at: `${sinceStart()} min` });
  }
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2 });
let base = "";

interface CallOptions {
  accept?: string;
  /** Cut the response (destroy the socket) after this many SSE events. */
  cutAfterEvents?: number;
  /** Cut the request this many ms after it was sent, answered or not. */
  cutAfterMs?: number;
  /** What a complete stream ends with; a stream that ends without it was cut by the daemon. */
  streamEnd?: RegExp;
}

/** One request with node's http client (keep-alive), classified into an Outcome and recorded. */
function call(route: string, method: string, path: string, body?: unknown, o: CallOptions = {}): Promise<Outcome & { body: string }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  const started = performance.now();
  return new Promise<Outcome & { body: string }>((resolve) => {
    let settled = false;
    let cut = false;
    let status = 0;
    let text = "";
    const finish = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      clearTimeout(cutTimer);
      inFlight--;
      record(outcome, text);
      resolve({ ...outcome, body: text });
    };
    const ms = () => round(performance.now() - started, 1);
    const req = request(
      {
        host: "127.0.0.1",
        port: Number(new URL(base).port),
        method,
        path,
        agent,
        headers: { ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}), ...(o.accept ? { accept: o.accept } : {}) },
      },
      (res) => {
        status = res.statusCode ?? 0;
        res.setEncoding("utf8");
        let events = 0;
        res.on("data", (chunk: string) => {
          text += chunk;
          if (text.length > 1 << 20) text = text.slice(-4096);
          for (const _ of chunk.matchAll(/^data: /gm)) events++;
          if (o.cutAfterEvents !== undefined && events >= o.cutAfterEvents && !cut) {
            cut = true;
            req.destroy();
            finish({ route, status: `${status} cut`, ms: ms() });
          }
        });
        res.on("end", () => {
          if (cut) return;
          const code = status === 200 ? undefined : (/"code":"([A-Z_]+)"/.exec(text)?.[1] ?? undefined);
          if (status === 200 && o.streamEnd && !o.streamEnd.test(text)) {
            return finish({ route, status: "lost", ms: ms(), lost: { error: "the stream ended without its final event", reusedSocket: req.reusedSocket, at: `${sinceStart()} min` } });
          }
          const streamError = status === 200 ? /event: error\ndata: .*"code":"([A-Z_]+)"/.exec(text) ?? /"error":\{[^}]*"code":"([A-Z_]+)"/.exec(text) : null;
          finish({ route, status: streamError ? `200 event:error ${streamError[1]}` : String(status), ms: ms(), code: code ?? streamError?.[1] });
        });
        res.on("error", () => {
          /* the request's error or close handler decides */
        });
        res.on("close", () => {
          if (!res.complete && !cut && !settled) {
            finish({ route, status: "lost", ms: ms(), lost: { error: `the response was cut by the daemon after ${text.length} bytes`, reusedSocket: req.reusedSocket, at: `${sinceStart()} min` } });
          }
        });
      },
    );
    req.on("error", (e: NodeJS.ErrnoException) => {
      if (cut) return finish({ route, status: status ? `${status} cut` : "cut before the answer", ms: ms() });
      finish({ route, status: "lost", ms: ms(), lost: { error: `${e.code ?? ""} ${e.message}`.trim(), reusedSocket: req.reusedSocket, at: `${sinceStart()} min` } });
    });
    const timeout = setTimeout(() => {
      if (settled) return;
      finish({ route, status: "lost", ms: ms(), lost: { error: `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`, reusedSocket: req.reusedSocket, at: `${sinceStart()} min` } });
      req.destroy();
    }, REQUEST_TIMEOUT_MS);
    const cutTimer =
      o.cutAfterMs !== undefined
        ? setTimeout(() => {
            if (settled) return;
            cut = true;
            req.destroy();
            finish({ route, status: status ? `${status} cut` : "cut before the answer", ms: ms() });
          }, o.cutAfterMs)
        : undefined;
    if (payload) req.write(payload);
    req.end();
  });
}

/** An OpenAI stream through fetch (undici), read to the end or cut after some chunks. */
async function openAiStream(route: string, model: string, cutAfterChunks: number | null): Promise<void> {
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  const started = performance.now();
  const ms = () => round(performance.now() - started, 1);
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(new Error("timeout")), REQUEST_TIMEOUT_MS);
  let text = "";
  let outcome: Outcome;
  let status = 0;
  try {
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: letters(between(1, 20)) }], max_tokens: model === "a" ? between(1, 96) : between(1, 32), stream: true }),
      signal: abort.signal,
    });
    status = res.status;
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let chunks = 0;
    let cut = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      chunks = (text.match(/^data: /gm) ?? []).length;
      if (cutAfterChunks !== null && chunks >= cutAfterChunks) {
        cut = true;
        abort.abort();
        break;
      }
    }
    if (cut) outcome = { route, status: `${status} cut`, ms: ms() };
    else if (status === 200 && !/data: \[DONE\]/.test(text)) {
      outcome = { route, status: "lost", ms: ms(), lost: { error: "the stream ended without data: [DONE]", reusedSocket: false, at: `${sinceStart()} min` } };
    } else {
      const err = status === 200 ? /"error":\{[^}]*"code":"([A-Z_]+)"/.exec(text) : null;
      const code = status === 200 ? err?.[1] : /"code":"([A-Z_]+)"/.exec(text)?.[1];
      outcome = { route, status: err ? `200 event:error ${err[1]}` : String(status), ms: ms(), code };
    }
  } catch (e) {
    // A cut of ours never lands here (the loop stops reading first): this is a timeout or a connection error.
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const why = abort.signal.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : `${err.message}${err.cause ? `: ${err.cause.code ?? ""} ${err.cause.message ?? ""}` : ""}`;
    outcome = { route, status: "lost", ms: ms(), lost: { error: why, reusedSocket: false, at: `${sinceStart()} min` } };
  } finally {
    clearTimeout(timeout);
  }
  inFlight--;
  record(outcome, text);
}

// ---- the traffic -----------------------------------------------------------------------------------------

const MODELS = { a: "", b: "" };
/** Models the soak is not sending requests to (being cycled), and requests in flight per model. */
const blocked = new Set<string>();
const using = new Map<string, number>([
  ["a", 0],
  ["b", 0],
]);
/** Models the daemon dropped without being asked (found by a request answered NO_MODEL/UNKNOWN_MODEL). */
const modelsLost: Array<{ model: string; at: string; code: string }> = [];
let deadline = 0;

async function withModel<T>(f: (model: string) => Promise<T>): Promise<T> {
  const candidates = (["a", "b"] as const).filter((m) => !blocked.has(m));
  const model = pick(candidates.length ? candidates : ["a"]);
  using.set(model, using.get(model)! + 1);
  try {
    const result = await f(model);
    const code = (result as { code?: string } | undefined)?.code;
    if ((code === "NO_MODEL" || code === "UNKNOWN_MODEL") && !blocked.has(model)) {
      modelsLost.push({ model, at: `${sinceStart()} min`, code });
      blocked.add(model);
      void reload(model);
    }
    return result;
  } finally {
    using.set(model, using.get(model)! - 1);
  }
}

/** Loads a model the daemon lost, so the soak goes on (each time is reported in modelsLost). */
async function reload(model: string): Promise<void> {
  while (using.get(model)! > 0) await sleep(50);
  await call("POST /load_model", "POST", "/load_model", { path: MODELS[model as "a" | "b"], name: model });
  blocked.delete(model);
}

const ACTIONS: Array<[number, () => Promise<unknown>]> = [
  [16, () => withModel((m) => call("POST /run_prompt raw", "POST", "/run_prompt", { model: m, prompt: letters(between(1, 40)), raw: true, max_tokens: m === "a" ? between(1, 128) : between(1, 48) }))],
  [12, () => withModel((m) => call("POST /run_prompt chat", "POST", "/run_prompt", { model: m, prompt: letters(between(1, 40)), max_tokens: m === "a" ? between(1, 128) : between(1, 48) }))],
  [
    8,
    () =>
      withModel((m) =>
        call("POST /run_prompt SSE", "POST", "/run_prompt", { model: m, prompt: letters(between(1, 40)), raw: random() < 0.5, max_tokens: m === "a" ? between(1, 128) : between(1, 48) }, { accept: "text/event-stream", streamEnd: /^event: (done|error)$/m }),
      ),
  ],
  [
    12,
    () =>
      withModel((m) =>
        call(
          "POST /run_prompt SSE, cut by the client",
          "POST",
          "/run_prompt",
          { model: m, prompt: letters(between(1, 40)), raw: random() < 0.5, max_tokens: m === "a" ? 2000 : 200 },
          // Half cut after some tokens, half after some time (so some while still waiting in the queue).
          random() < 0.5 ? { accept: "text/event-stream", cutAfterEvents: between(1, 30) } : { accept: "text/event-stream", cutAfterMs: between(0, 1500) },
        ),
      ),
  ],
  [7, () => withModel((m) => openAiStream("POST /v1/chat/completions stream", m, null))],
  [5, () => withModel((m) => openAiStream("POST /v1/chat/completions stream, cut by the client", m, between(1, 10)))],
  [4, () => withModel((m) => call("POST /v1/chat/completions", "POST", "/v1/chat/completions", { model: m, messages: [{ role: "user", content: letters(between(1, 20)) }], max_tokens: m === "a" ? between(1, 64) : between(1, 24) }))],
  [4, () => (random() < 0.5 ? call("POST /stop", "POST", "/stop") : withModel((m) => call("POST /stop", "POST", "/stop", { model: m })))],
  [14, () => call("GET /status", "GET", "/status")],
  [3, () => call("GET /health", "GET", "/health")],
  [2, () => call("GET /metrics", "GET", "/metrics")],
];
const TOTAL_WEIGHT = ACTIONS.reduce((s, [w]) => s + w, 0);

function nextAction(): () => Promise<unknown> {
  let x = random() * TOTAL_WEIGHT;
  for (const [w, f] of ACTIONS) {
    if ((x -= w) < 0) return f;
  }
  return ACTIONS[0][1];
}

async function worker(): Promise<void> {
  while (Date.now() < deadline) {
    await nextAction()();
    await sleep(between(50, 500));
  }
}

/** Waits until /status says the model is idle (at most a minute). */
async function idle(model: string): Promise<void> {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    const status = (await fetch(`${base}/status`).then((r) => r.json(), () => null)) as { models?: Array<{ name: string; state: string }> } | null;
    if (status?.models?.find((m) => m.name === model)?.state === "idle") return;
    await sleep(100);
  }
}

/** Every CYCLE_MS: stop sending to "b", wait until none of the soak's requests uses it, unload it, load it again. */
async function cycler(): Promise<number> {
  let cycles = 0;
  for (;;) {
    const wait = between(CYCLE_MS * 0.75, CYCLE_MS * 1.25);
    if (Date.now() + wait > deadline - 10_000) return cycles;
    await sleep(wait);
    if (blocked.has("b")) continue;
    blocked.add("b");
    while (using.get("b")! > 0) await sleep(50);
    // A request the soak has cut may still be ending inside the daemon (a cut is a CANCEL it acts on when it
    // sees the socket close): "idle" is the daemon's word, and unloading a busy model is refused (409 BUSY).
    await idle("b");
    await call("POST /unload_model", "POST", "/unload_model", { model: "b" });
    await sleep(between(0, 3000));
    await call("POST /load_model", "POST", "/load_model", { path: MODELS.b, name: "b" });
    blocked.delete("b");
    cycles++;
  }
}

// ---- memory --------------------------------------------------------------------------------------------

interface Sample {
  min: number;
  daemon: number | null;
  /** Each child process of the daemon: its RSS, and which model it runs ("spare" when none). */
  engines: Array<{ pid: number; rss: number; role: string }>;
}
const samples: Sample[] = [];

async function sampler(daemonPid: number, stop: () => boolean): Promise<void> {
  while (!stop()) {
    let roles = new Map<number, string>();
    try {
      const res = await fetch(`${base}/status`, { signal: AbortSignal.timeout(10_000) });
      const status = (await res.json()) as { models: Array<{ name: string; engine_pid: number | null }> };
      roles = new Map(status.models.filter((m) => m.engine_pid !== null).map((m) => [m.engine_pid!, m.name]));
    } catch {
      // the traffic's own /status requests are what count; this one only names the engines
    }
    const engines = childrenOf(daemonPid)
      .map((pid) => ({ pid, rss: rssOf(pid), role: roles.get(pid) ?? "spare" }))
      .filter((e): e is { pid: number; rss: number; role: string } => e.rss !== null);
    samples.push({ min: sinceStart(), daemon: rssOf(daemonPid), engines });
    await sleep(SAMPLE_MS);
  }
}

/** How long after a process starts, or takes a new role, its samples are left out of its slope (start, load). */
const SETTLE_MIN = 0.25;

interface Series {
  pid: number;
  role: string;
  samples: number;
  minutes: number;
  first_bytes: number;
  last_bytes: number;
  max_bytes: number;
  /** Least squares over the settled samples: SETTLE_MIN after the role began, not the last one before a new role. */
  slope_bytes_per_min: number | null;
  slope_second_half_bytes_per_min: number | null;
}

/**
 * Slopes in bytes a minute: the daemon's over the whole run and its second half, and each engine process's per
 * role. A spare's series begins with its start (Node, node-llama-cpp: ~40 to ~100 MB) and may end in the load
 * that makes it a model's engine; a model's begins with its load. Those samples are left out of the slopes.
 */
function memoryReport(samples: readonly Sample[]): { daemon: Omit<Series, "pid" | "role" | "minutes">; engines: Series[] } {
  const daemonPoints = samples.filter((s) => s.daemon !== null).map((s) => [s.min, s.daemon!] as [number, number]);
  const half = daemonPoints.length ? daemonPoints[daemonPoints.length - 1][0] / 2 : 0;
  const daemon = {
    samples: daemonPoints.length,
    first_bytes: daemonPoints[0]?.[1] ?? 0,
    last_bytes: daemonPoints.at(-1)?.[1] ?? 0,
    max_bytes: daemonPoints.length ? Math.max(...daemonPoints.map((p) => p[1])) : 0,
    slope_bytes_per_min: slope(daemonPoints),
    slope_second_half_bytes_per_min: slope(daemonPoints.filter((p) => p[0] >= half)),
  };
  // One series per engine process and role: a spare that is given a model changes role (and size).
  const series = new Map<string, { pid: number; role: string; points: Array<[number, number]>; changedRole: boolean }>();
  const lastRole = new Map<number, string>();
  for (const s of samples) {
    for (const e of s.engines) {
      const before = lastRole.get(e.pid);
      if (before !== undefined && before !== e.role) series.get(`${e.pid}:${before}`)!.changedRole = true;
      lastRole.set(e.pid, e.role);
      const key = `${e.pid}:${e.role}`;
      const entry = series.get(key) ?? { pid: e.pid, role: e.role, points: [], changedRole: false };
      entry.points.push([s.min, e.rss]);
      series.set(key, entry);
    }
  }
  const engines = [...series.values()].map(({ pid, role, points, changedRole }) => {
    const settled = points.filter((p) => p[0] >= points[0][0] + SETTLE_MIN).slice(0, changedRole ? -1 : undefined);
    const mid = settled.length ? (settled[0][0] + settled.at(-1)![0]) / 2 : 0;
    return {
      pid,
      role,
      samples: points.length,
      minutes: round(points.at(-1)![0] - points[0][0], 2),
      first_bytes: (settled[0] ?? points[0])[1],
      last_bytes: (settled.at(-1) ?? points.at(-1)!)[1],
      max_bytes: Math.max(...(settled.length ? settled : points).map((p) => p[1])),
      slope_bytes_per_min: slope(settled),
      slope_second_half_bytes_per_min: slope(settled.filter((p) => p[0] >= mid)),
    };
  });
  return { daemon, engines };
}

// ---- the run -------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const launch = prepareLaunch(launchOptions(args));
  process.once("exit", () => launch.cleanup());
  MODELS.a = await tinyModel();
  MODELS.b = await slowModel();
  const date = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
  // The daemon's log goes to a file (git-ignored), written by the kernel: the daemon never waits on a reader.
  const logPath = join(ROOT, "bench", "results", `soak-${date}.log`);
  const logFd = openSync(logPath, "a");
  const port = await freePort();
  const daemonArgs = ["serve", "--port", String(port), "--threads", "1", "--gpu", "off", "--max-models", "2", "--max-queue", "8", "--keep-alive=-1", "--log-format", "json"];
  const child: ChildProcess = spawn(process.execPath, [...launch.argv.process, ...daemonArgs], { cwd: ROOT, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  let exit: { code: number | null; signal: string | null } | null = null;
  const exited = new Promise<void>((resolve) => child.once("exit", (code, signal) => ((exit = { code, signal }), resolve())));
  base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (exit) throw new Error(`the daemon exited at start: ${JSON.stringify(exit)}; see ${logPath}`);
    if (await fetch(`${base}/health`).then((r) => r.ok, () => false)) break;
    if (i > 600) throw new Error("the daemon did not answer /health within 60 s");
    await sleep(100);
  }
  for (const [name, path] of Object.entries(MODELS)) {
    const res = await call("POST /load_model", "POST", "/load_model", { path, name });
    if (res.status !== "200") throw new Error(`loading ${name} answered ${res.status}: ${res.body}`);
  }
  console.log(`soak: ${MINUTES} min, ${CONCURRENCY} requests in flight at most, daemon pid ${child.pid} (${launch.description}), log ${relative(ROOT, logPath)}`);

  startedAt = Date.now();
  deadline = startedAt + MINUTES * 60_000;
  let sampling = true;
  const memory = sampler(child.pid!, () => !sampling);
  const progress = setInterval(() => {
    const total = [...outcomes.values()].reduce((s, m) => s + [...m.values()].reduce((a, b) => a + b, 0), 0);
    const last = samples.at(-1);
    console.log(
      `  ${sinceStart().toFixed(1)} min: ${total} requests, ${lost.length} lost, ${unexpected.length} unexpected; daemon RSS ${last?.daemon ? round(last.daemon / 1e6, 1) : "?"} MB; engines ${last?.engines.map((e) => `${e.role} ${round(e.rss / 1e6, 1)} MB`).join(", ")}`,
    );
  }, 60_000);
  const cycles = cycler();
  await Promise.all(Array.from({ length: CONCURRENCY - 1 }, () => worker()));
  const cycleCount = await cycles;
  clearInterval(progress);
  // One last sample after the traffic, then the daemon's own account.
  await sleep(2000);
  sampling = false;
  await memory;
  const finalStatus = await fetch(`${base}/status`).then((r) => r.json(), (e: Error) => ({ error: e.message }));
  const metricsText = await fetch(`${base}/metrics`).then((r) => r.text(), () => "");
  const engineExits = Object.fromEntries([...metricsText.matchAll(/^kekahyde_engine_process_exits_total\{reason="([^"]+)"\} (\d+)/gm)].map((m) => [m[1], Number(m[2])]));
  const httpByStatus: Record<string, number> = {};
  for (const m of metricsText.matchAll(/^kekahyde_http_requests_total\{([^}]*)\} (\d+)/gm)) {
    const status = /status="(\d+)"/.exec(m[1])?.[1] ?? "?";
    httpByStatus[status] = (httpByStatus[status] ?? 0) + Number(m[2]);
  }
  const metricsExcerpt = metricsText.split("\n").filter((l) => /^kekahyde_(engine|models?_|generation|queue|http_requests_total)/.test(l));

  // The end: SIGTERM, and no engine process may outlive the daemon.
  const enginePids = samples.at(-1)?.engines.map((e) => e.pid) ?? [];
  const stopAt = performance.now();
  child.kill("SIGTERM");
  await Promise.race([exited, sleep(30_000)]);
  const shutdownMs = round(performance.now() - stopAt, 0);
  if (!exit) child.kill("SIGKILL");
  await sleep(500);
  const orphans = enginePids.filter(alive);

  const mem = memoryReport(samples);
  const requests = Object.fromEntries([...outcomes].map(([route, m]) => [route, Object.fromEntries([...m].sort())]));
  const total = [...outcomes.values()].reduce((s, m) => s + [...m.values()].reduce((a, b) => a + b, 0), 0);
  const result = {
    date: new Date().toISOString(),
    command: `npm run soak -- ${args.join(" ")}`.trim(),
    daemon: launch.description,
    daemon_args: daemonArgs.filter((a, i) => a !== "--port" && daemonArgs[i - 1] !== "--port"),
    machine: { cpu: cpus()[0]?.model ?? "unknown", logical_cpus: availableParallelism(), memory_gib: round(totalmem() / 1024 ** 3, 1), node: process.version },
    minutes: MINUTES,
    concurrency: CONCURRENCY,
    max_in_flight: maxInFlight,
    seed: SEED,
    models: { a: relative(ROOT, MODELS.a), b: relative(ROOT, MODELS.b) },
    unload_load_cycles: cycleCount,
    total_requests: total,
    requests,
    lost_requests: lost.length,
    lost,
    unexpected_answers: unexpected.length,
    unexpected,
    models_lost: modelsLost,
    memory: mem,
    final_status: finalStatus,
    engine_exits: engineExits,
    http_requests_by_status_from_metrics: httpByStatus,
    metrics_excerpt: metricsExcerpt,
    shutdown: { exit, ms: shutdownMs, orphan_engine_processes: orphans },
    log: relative(ROOT, logPath),
    samples,
  };
  const jsonPath = join(ROOT, "bench", "results", `soak-${date}.json`);
  writeFileSync(jsonPath, JSON.stringify(result, null, 2));
  const md = markdown(result);
  console.log("\n" + md);
  if (!args.includes("--no-docs")) writeDocs(md);
  console.log(`\nresults: ${relative(ROOT, jsonPath)}`);
  agent.destroy();
  process.exitCode = lost.length || orphans.length ? 1 : 0;
}

type Result = {
  date: string;
  command: string;
  daemon: string;
  daemon_args: string[];
  machine: { cpu: string; logical_cpus: number; memory_gib: number; node: string };
  minutes: number;
  concurrency: number;
  max_in_flight: number;
  unload_load_cycles: number;
  total_requests: number;
  requests: Record<string, Record<string, number>>;
  lost_requests: number;
  lost: Array<Outcome & { detail: string }>;
  unexpected_answers: number;
  unexpected: Array<{ route: string; status: string; code: string | undefined; body: string; at: string }>;
  models_lost: Array<{ model: string; at: string; code: string }>;
  memory: ReturnType<typeof memoryReport>;
  samples: Sample[];
  final_status: unknown;
  engine_exits: Record<string, number>;
  shutdown: { exit: { code: number | null; signal: string | null } | null; ms: number; orphan_engine_processes: number[] };
};

const mbPerMin = (x: number | null) => (x === null ? "n/a" : `${x >= 0 ? "+" : ""}${round(x / 1e6, 3)}`);
const mb = (x: number | null) => (x === null ? "n/a" : round(x / 1e6, 1));

function markdown(r: Result): string {
  const out: string[] = [];
  const table = (head: string[], rows: Array<Array<string | number>>) => out.push(`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((x) => `| ${x.join(" | ")} |`), "");
  out.push("## Soak", "");
  out.push(
    `Generated by \`${r.command}\` on ${r.date.slice(0, 10)}: the daemon (${r.daemon}; \`${r.daemon_args.join(" ")}\`) under mixed traffic for ${r.minutes} minutes, ` +
      `at most ${r.concurrency} requests in flight (${r.max_in_flight} reached), on ${r.machine.cpu}, ${r.machine.logical_cpus} logical CPUs (shared), Node ${r.machine.node}. ` +
      `Model "a" (the tiny char model) stays loaded throughout; model "b" (the slow char model) was unloaded and loaded again ${r.unload_load_cycles} times. ` +
      `Memory: VmRSS from /proc every few seconds, slopes by least squares.`,
    "",
  );
  const statuses = [...new Set(Object.values(r.requests).flatMap((m) => Object.keys(m)))].sort();
  table(["route", ...statuses, "total"], [
    ...Object.entries(r.requests).map(([route, m]) => [route, ...statuses.map((s) => m[s] ?? ""), Object.values(m).reduce((a, b) => a + b, 0)]),
    ["all", ...statuses.map((s) => Object.values(r.requests).reduce((a, m) => a + (m[s] ?? 0), 0)), r.total_requests],
  ]);
  out.push(
    `Lost requests (no HTTP answer, a connection error, or a stream ended without its final event, where the client did not cut it): **${r.lost_requests}**` +
      (r.lost.length ? `: ${r.lost.slice(0, 10).map((l) => `${l.route} at ${l.lost?.at}: ${l.detail}`).join("; ")}${r.lost.length > 10 ? "; …" : ""}` : "") +
      `. Answers other than 200, 503 (queue full) or a cut by the client: ${r.unexpected_answers}` +
      (r.unexpected.length ? ` (${summarizeUnexpected(r.unexpected)})` : "") +
      `. Models the daemon dropped unasked: ${r.models_lost.length ? r.models_lost.map((m) => `${m.model} at ${m.at} (${m.code})`).join(", ") : "none"}.`,
    "",
  );
  const d = r.memory.daemon;
  const row = (name: string, x: Omit<Series, "pid" | "role" | "minutes">, minutes: number | string) => [
    name,
    minutes,
    x.samples,
    mb(x.first_bytes),
    mb(x.last_bytes),
    mb(x.max_bytes),
    mbPerMin(x.slope_bytes_per_min),
    mbPerMin(x.slope_second_half_bytes_per_min),
  ];
  const median = (xs: number[]) => (xs.length ? [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)] : null);
  /** Short-lived processes of one role, summed up: medians over the processes. */
  const group = (name: string, xs: Series[]) => {
    const slopes = xs.map((x) => x.slope_bytes_per_min).filter((x): x is number => x !== null);
    return [
      `${name} (${xs.length} processes; medians)`,
      `${round(Math.min(...xs.map((x) => x.minutes)), 1)}–${round(Math.max(...xs.map((x) => x.minutes)), 1)} each`,
      median(xs.map((x) => x.samples)) ?? "",
      mb(median(xs.map((x) => x.first_bytes))),
      mb(median(xs.map((x) => x.last_bytes))),
      mb(median(xs.map((x) => x.max_bytes))),
      `${mbPerMin(median(slopes))} (${mbPerMin(Math.min(...slopes))} to ${mbPerMin(Math.max(...slopes))})`,
      "",
    ];
  };
  const long = r.memory.engines.filter((e) => e.minutes >= 5).sort((p, q) => q.minutes - p.minutes);
  const short = r.memory.engines.filter((e) => e.minutes < 5 && e.minutes >= 0.5);
  const roles = [...new Set(short.map((e) => e.role))].sort();
  table(["process", "minutes", "samples", "RSS first, MB", "RSS last, MB", "RSS max, MB", "slope, MB/min", "slope, second half, MB/min"], [
    row("daemon", d, round(r.minutes, 1)),
    ...long.map((e) => row(`engine ${e.pid} (${e.role === "spare" ? "spare" : `model ${e.role}`})`, e, e.minutes)),
    ...roles.map((role) => group(role === "spare" ? "spare engine processes" : `engine processes of model ${role}`, short.filter((e) => e.role === role))),
  ]);
  out.push(
    `Slopes leave out the first ${SETTLE_MIN * 60} s of each process's role (a start, a load) and, for a spare that was given a model, its last sample; every process's series is in the JSON.`,
    "",
  );
  const exits = Object.entries(r.engine_exits).map(([k, v]) => `${k} ${v}`).join(", ");
  const status = r.final_status as { models?: Array<{ name: string; state: string; engine_rss_bytes: number | null }>; memory_usage?: number; last_error?: { code: string } | null };
  out.push(
    `At the end: /metrics engine process exits by reason: ${exits || "none"}; /status: ${status.models?.map((m) => `${m.name} ${m.state} (engine ${mb(m.engine_rss_bytes)} MB)`).join(", ") ?? "n/a"}, ` +
      `memory_usage ${mb(status.memory_usage ?? null)} MB, last_error ${status.last_error ? status.last_error.code : "none"}. ` +
      `SIGTERM → exit ${r.shutdown.exit ? (r.shutdown.exit.code ?? r.shutdown.exit.signal) : "none within 30 s"} in ${r.shutdown.ms} ms; engine processes left behind: ${r.shutdown.orphan_engine_processes.length}.`,
    "",
  );
  return out.join("\n");
}

function summarizeUnexpected(xs: Result["unexpected"]): string {
  const counts = new Map<string, number>();
  for (const x of xs) counts.set(`${x.route} ${x.status}${x.code ? ` ${x.code}` : ""}`, (counts.get(`${x.route} ${x.status}${x.code ? ` ${x.code}` : ""}`) ?? 0) + 1);
  return [...counts].map(([k, v]) => `${v}× ${k}`).join("; ");
}

/** Replaces the "## Soak" section of docs/benchmarks.md (up to the next "## " heading), or appends one. */
function writeDocs(md: string): void {
  const docs = join(ROOT, "docs", "benchmarks.md");
  const text = existsSync(docs) ? readFileSync(docs, "utf8") : "# Benchmarks\n";
  const start = text.search(/^## Soak$/m);
  if (start < 0) return writeFileSync(docs, `${text.trimEnd()}\n\n${md}\n`);
  const rest = text.slice(start + 1);
  const next = rest.search(/^## /m);
  writeFileSync(docs, text.slice(0, start) + md + "\n" + (next < 0 ? "" : rest.slice(next)));
}

/** `--render FILE`: the report again from a saved result (its memory figures recomputed from its samples). */
function render(file: string): void {
  const result = JSON.parse(readFileSync(file, "utf8")) as Result;
  result.memory = memoryReport(result.samples);
  writeFileSync(file, JSON.stringify(result, null, 2));
  const md = markdown(result);
  console.log(md);
  if (!args.includes("--no-docs")) writeDocs(md);
}

if (args.includes("--render")) render(opt("render", ""));
else
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
