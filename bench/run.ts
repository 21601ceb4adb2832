// `npm run bench [-- options]`: Kekahyde side by side with llama.cpp's own tools (llama-bench, llama-server),
// with the same daemon running its engine in-process (bench/inprocess-daemon.ts: `createLlamaEngine` injected,
// no engine processes), and with the node-llama-cpp binding in-process, on the same generated model, in the
// same run. Reports ratios. Not a test: never run in CI. Options:
//   --model small-q8|small-f16|tinyllama-q8|tinyllama-f16|PATH   (default small-q8)
//   --threads N     (default 2)      --reps N (default 3)      --gpu auto|off (default off)
//   --only a,b      run only these sections (pp-tg, e2e, status, cancel, load, threads, concurrency, context,
//                   prompt-cache, first-load; and fleet, bench/fleet.ts)
//   --src-from DIR  run the daemons compiled from DIR/src (another checkout, e.g. a git worktree of an older
//                   commit; see bench/snapshot.ts)
//   --source        run the daemons from the TypeScript sources through tsx (default: a compiled snapshot of
//                   src/ in a temporary folder, see bench/snapshot.ts)
//   --patch FILE    apply a patch to that snapshot only (repeatable; skipped once src/ has it)
//   --out DIR       write the results there instead of bench/results (docs/benchmarks.md is then left alone)
//   --wait-quiet L  before starting, wait (up to 45 min) until the 1-minute load average is below L: this
//                   machine is shared, and other work moves results by more than the differences measured
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { availableParallelism, cpus, totalmem } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { getLlama, LlamaCompletion, LlamaLogLevel, type Llama, type LlamaContext } from "node-llama-cpp";
import { SMALL_SHAPE, TINYLLAMA_SHAPE, writeRandomLlama, type LlamaShape, type WeightType } from "../src/gguf/randomModel.ts";
import { PEER_BIN, peerCpuFlags, peersAvailable } from "./peers.ts";
import { launchOptions, prepareLaunch, type EngineKind, type Launch } from "./snapshot.ts";
import { childrenOf, listeningUrl } from "./daemonProcess.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const THREADS = Number(opt("threads", "2"));
const REPS = Number(opt("reps", "3"));
const GPU = opt("gpu", "off");
/** llama.cpp's tools put every layer on the GPU when the daemons may use one (the daemons' gpu_layers "auto" does). */
const PEER_GPU_LAYERS = GPU === "off" ? [] : ["-ngl", "999"];
/** Where the results (JSON, Markdown) go. */
const RESULTS_DIR = opt("out", "");
const ONLY = new Set(opt("only", "pp-tg,e2e,status,cancel,load,threads,concurrency,context,prompt-cache,first-load").split(","));
const PP = 256;
const TG = 64;

const MODELS: Record<string, [LlamaShape, WeightType]> = {
  "small-q8": [SMALL_SHAPE, "Q8_0"],
  "small-f16": [SMALL_SHAPE, "F16"],
  "tinyllama-q8": [TINYLLAMA_SHAPE, "Q8_0"],
  "tinyllama-f16": [TINYLLAMA_SHAPE, "F16"],
};

async function modelPath(): Promise<string> {
  const name = opt("model", "small-q8");
  if (!(name in MODELS)) return name;
  const [shape, type] = MODELS[name];
  const dir = join(ROOT, "bench", "models");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${shape.name}-${type.toLowerCase()}.gguf`);
  if (!existsSync(path)) {
    console.log(`writing ${path} ...`);
    await writeRandomLlama(path, shape, type, 42);
  }
  return path;
}

/** Where the generated tables of docs/benchmarks.md end; what follows is kept by the next full run. */
const DOCS_MARKER = "<!-- npm run bench writes everything above this line; what follows is kept. -->";
/** A path as the docs print it: relative to the checkout when inside it. */
const shortPath = (p: string) => (p.startsWith(ROOT + "/") ? relative(ROOT, p) : p);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs: number[]) => pct(xs, 50);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
/** A prompt of `tokens` tokens (BOS + one token a letter), different every call so no cache can help. */
const freshPrompt = (tokens: number) => Array.from({ length: tokens - 1 }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join("");
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

interface HttpResult {
  status: number;
  body: string;
  ms: number;
  ttftMs: number | null;
  events: number[];
}

/** One HTTP request; records when the first body byte and every SSE event arrived. */
function http(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal, onEvent?: (events: number) => void): Promise<HttpResult> {
  const { hostname, port } = new URL(url);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(
      { hostname, port, method, path, agent, signal, headers: { ...(payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {}), ...headers } },
      (res) => {
        let text = "";
        let ttft: number | null = null;
        const events: number[] = [];
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          const now = performance.now() - started;
          ttft ??= now;
          for (const _ of chunk.matchAll(/^data: /gm)) events.push(now);
          text += chunk;
          onEvent?.(events.length);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, ms: performance.now() - started, ttftMs: ttft, events }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(20);
  }
}

/** The order two daemons take their turn in round r: alternating, so neither always goes first. */
const turns = (r: number): readonly EngineKind[] => (r % 2 === 0 ? KINDS : [...KINDS].reverse());

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

/** A result that must be a 200: a bench that measured errors would report nonsense. */
function ok(res: HttpResult): HttpResult {
  if (res.status !== 200) throw new Error(`answered ${res.status}: ${res.body.slice(0, 500)}`);
  return res;
}

/** POST /load_model, which must succeed. */
async function loadModel(d: Daemon, body: Record<string, unknown>): Promise<void> {
  const res = await http(d.url, "POST", "/load_model", body);
  if (res.status !== 200) throw new Error(`load_model answered ${res.status}: ${res.body}`);
}

// ---- the contenders -------------------------------------------------------------------------------------

const KINDS: readonly EngineKind[] = ["process", "in-process"];

let launch!: Launch;

interface Daemon {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

interface Kekahyde extends Daemon {
  kind: EngineKind;
  pid: number;
}

async function startKekahyde(threads: number, extra: string[] = [], kind: EngineKind = "process"): Promise<Kekahyde> {
  const child = spawn(process.execPath, [...launch.argv[kind], "serve", "--port", "0", "--threads", String(threads), "--gpu", GPU, "--max-queue", "64", "--log-format", "json", ...extra], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await listeningUrl(child, `kekahyde (${kind}) exited`);
  return {
    url,
    child,
    kind,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      if ((await Promise.race([exited, sleep(20_000).then(() => "late")])) === "late") {
        console.error(`kekahyde (${kind}, pid ${child.pid}) did not exit within 20 s of SIGTERM: killed`);
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}


/**
 * Waits until the daemon's engine processes are settled: `count` children, none of them with children of
 * their own (node-llama-cpp tests its binary in a subprocess while it starts), and their RSS steady for a
 * second. This is how the bench knows the spare engine process is ready: the daemon does not report it.
 */
async function enginesSettled(d: Kekahyde, count: number, timeoutMs = 60_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  let steady = 0;
  for (;;) {
    const kids = childrenOf(d.pid);
    const rss = kids.map((pid) => {
      try {
        return Math.round(rssOf(pid) / 1e6);
      } catch {
        return -1;
      }
    });
    const key = `${kids.join(",")}:${rss.join(",")}`;
    const settled = kids.length === count && kids.every((pid) => childrenOf(pid).length === 0);
    steady = settled && key === last ? steady + 1 : 0;
    last = key;
    if (steady >= 5) return kids;
    if (Date.now() > deadline) throw new Error(`engine processes of ${d.kind} did not settle: ${key}`);
    await sleep(200);
  }
}

async function startLlamaServer(model: string, threads: number, parallel = 1, ctx = 2048, logFile?: string): Promise<Daemon & { startMs: number }> {
  const port = 39000 + Math.floor(Math.random() * 1000);
  const started = performance.now();
  // Its log goes to `logFile` when one is given (kept when something goes wrong), else nowhere.
  const log = logFile ? openSync(logFile, "w") : "ignore";
  const child = spawn(join(PEER_BIN, "llama-server"), ["-m", model, "--host", "127.0.0.1", "--port", String(port), "-t", String(threads), "-c", String(ctx * parallel), "-np", String(parallel), ...PEER_GPU_LAYERS, ...(logFile ? [] : ["--log-disable"])], {
    stdio: ["ignore", log, log],
  });
  if (typeof log === "number") closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await http(url, "GET", "/health")).status === 200, 120_000);
  return {
    url,
    child,
    startMs: performance.now() - started,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      if ((await Promise.race([exited, sleep(10_000).then(() => "late")])) === "late") {
        console.error(`llama-server (pid ${child.pid}) did not exit within 10 s of SIGTERM: killed`);
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

interface PpTg {
  pp: number;
  tg: number;
}

/**
 * One Kekahyde measurement through /run_prompt, timed by the client: prompt processing from a 1-token request
 * of PP prompt tokens, generation from the difference between a TG-token and a 1-token request on the same
 * short prompt length, so HTTP costs are included but SSE framing and client-side event jitter are not.
 */
async function kekahydeRep(url: string): Promise<PpTg> {
  const run = async (prompt: string, maxTokens: number) => ok(await http(url, "POST", "/run_prompt", { prompt, raw: true, max_tokens: maxTokens, temperature: 0 })).ms;
  const pp = PP / ((await run(freshPrompt(PP), 1)) / 1000);
  const one = await run(freshPrompt(8), 1);
  const many = await run(freshPrompt(8), TG);
  return { pp, tg: (TG - 1) / ((many - one) / 1000) };
}

async function kekahydePpTg(url: string): Promise<PpTg> {
  const reps: PpTg[] = [];
  for (let r = 0; r < REPS; r++) reps.push(await kekahydeRep(url));
  return { pp: median(reps.map((x) => x.pp)), tg: median(reps.map((x) => x.tg)) };
}

/** CPU time (user + system, ms) of a process and its live children, from /proc (10 ms ticks). */
function cpuMsOfTree(pid: number): number {
  const ticks = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(f[11]) + Number(f[12]);
    } catch {
      return 0;
    }
  };
  return [pid, ...childrenOf(pid)].reduce((sum, p) => sum + ticks(p), 0) * 10;
}

/** Tokens of the long generations that measure the process boundary. */
const TG_LONG = 256;

/**
 * One measurement of a daemon's time per generated token, wall and CPU (its own process and its engine
 * processes): a TG_LONG-token and a 1-token request on the same short prompt length, the difference divided
 * by TG_LONG - 1, so that the prompt, HTTP and the request's own costs cancel.
 */
async function perTokenRep(d: Kekahyde): Promise<PerToken> {
  const run = async (maxTokens: number) => {
    const cpu = cpuMsOfTree(d.pid);
    const { ms } = ok(await http(d.url, "POST", "/run_prompt", { prompt: freshPrompt(8), raw: true, max_tokens: maxTokens, temperature: 0 }));
    return { ms, cpu: cpuMsOfTree(d.pid) - cpu };
  };
  const one = await run(1);
  const many = await run(TG_LONG);
  // And the median gap between streamed tokens: a stall of the machine moves a few gaps, not the median.
  const { events } = ok(await http(d.url, "POST", "/run_prompt", { prompt: freshPrompt(8), raw: true, max_tokens: TG_LONG, temperature: 0 }, { accept: "text/event-stream" }));
  const tokens = events.slice(0, -1); // the last event is "done"
  const gaps = tokens.slice(2).map((t, i) => t - tokens[i + 1]);
  return { wall_ms: (many.ms - one.ms) / (TG_LONG - 1), cpu_ms: (many.cpu - one.cpu) / (TG_LONG - 1), gap_ms: gaps.length ? median(gaps) : NaN };
}

interface PerToken {
  /** Wall time per token: (TG_LONG-token request - 1-token request) / (TG_LONG - 1). */
  wall_ms: number;
  /** CPU time per token of the daemon and its engine processes, the same way. */
  cpu_ms: number;
  /** The median gap between streamed tokens of a TG_LONG-token SSE request. */
  gap_ms: number;
}

/**
 * The IPC message alone, as an engine process sends a token: a child process sends `count` stream messages
 * shaped like host.ts's, each after the previous one's send callback (as its Stream does), and this process
 * receives them as ProcessLoadedModel does (a lookup, a callback). Wall time per message, and CPU time per
 * message of each side.
 */
async function ipcMicrobench(count = 20_000): Promise<{ wall_us: number; sender_cpu_us: number; receiver_cpu_us: number }> {
  const child = spawn(process.execPath, [
    "-e",
    `const n = ${count};
         let i = 0;
         const before = process.cpuUsage();
         const t = performance.now();
         const next = () => {
           if (i === n) {
             const c = process.cpuUsage(before);
             return process.send({ type: "end", ms: performance.now() - t, cpuUs: c.user + c.system }, () => process.disconnect());
           }
           i++;
           process.send({ type: "stream", id: 1, text: " w" + (10000 + (i % 20000)), progress: { promptTokens: 9, completionTokens: i, firstTokenMs: 12.5 } }, undefined, {}, next);
         };
         process.on("message", () => next());`,
  ], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  const pending = new Map([[1, { onText: (_: string) => {}, onProgress: (_: unknown) => {} }]]);
  const before = process.cpuUsage();
  const end = new Promise<{ ms: number; cpuUs: number }>((resolve) => {
    child.on("message", (m: { type: string; id: number; text: string; progress: unknown; ms: number; cpuUs: number }) => {
      if (m.type === "end") return resolve(m);
      const p = pending.get(m.id);
      if (!p) return;
      p.onText(m.text);
      p.onProgress(m.progress);
    });
  });
  child.send({ type: "go" });
  const { ms, cpuUs } = await end;
  const mine = process.cpuUsage(before);
  await new Promise((r) => child.once("exit", r));
  return { wall_us: (ms * 1000) / count, sender_cpu_us: cpuUs / count, receiver_cpu_us: (mine.user + mine.system) / count };
}

/** llama.cpp's own timing lines (llama_perf_context_print), captured from the binding's logger. */
const perfLines: string[] = [];
/** Tokens/s inside llama_decode alone since the last call, from llama.cpp's perf counters. */
async function decodeRate(ctx: LlamaContext): Promise<number | null> {
  perfLines.length = 0;
  await ctx.printTimings(); // prints and resets the counters
  // "eval time = 345.67 ms / 63 runs" (generated tokens); the "prompt eval" line counts tokens, not runs.
  const m = perfLines.map((l) => /eval time =\s+([\d.]+) ms \/\s+(\d+) runs/.exec(l)).find(Boolean);
  return m ? Number(m[2]) / (Number(m[1]) / 1000) : null;
}

interface BindingRun extends PpTg {
  /** Generation rate inside llama_decode alone. */
  decode_only_tg: number | null;
}

/**
 * The binding in-process, timed per token from onToken. Also reports the rate inside llama_decode alone
 * (llama.cpp's perf counters), which separates the engine's own speed from the per-token work around it
 * (JavaScript, sampling, hand-offs between the event loop and the thread that runs the decode).
 */
async function openBinding(llama: Llama, model: string, threads: number, contextSize = 2048): Promise<{ rep(): Promise<BindingRun>; close(): Promise<void> }> {
  const m = await llama.loadModel({ modelPath: model });
  // Flash attention as the daemon (--flash-attention auto) and llama-bench run it.
  const ctx = await m.createContext({ contextSize, threads: { ideal: threads, min: threads }, performanceTracking: true, flashAttention: "auto" });
  const completion = new LlamaCompletion({ contextSequence: ctx.getSequence() });
  return {
    async rep() {
      let t0 = performance.now();
      let first = 0;
      await completion.generateCompletion(freshPrompt(PP), { maxTokens: 1, temperature: 0, onToken: () => void (first ||= performance.now()) });
      const pp = PP / ((first - t0) / 1000);
      await completion.generateCompletion(freshPrompt(8), { maxTokens: 1, temperature: 0 });
      await decodeRate(ctx);
      const stamps: number[] = [];
      t0 = performance.now();
      await completion.generateCompletion(freshPrompt(8), { maxTokens: TG, temperature: 0, onToken: () => void stamps.push(performance.now()) });
      const decode = await decodeRate(ctx);
      return { pp, tg: (stamps.length - 1) / ((stamps.at(-1)! - stamps[0]) / 1000), decode_only_tg: decode };
    },
    async close() {
      completion.dispose();
      await ctx.dispose();
      await m.dispose();
    },
  };
}

async function bindingPpTg(llama: Llama, model: string, threads: number, contextSize = 2048): Promise<BindingRun> {
  const b = await openBinding(llama, model, threads, contextSize);
  const reps: BindingRun[] = [];
  for (let r = 0; r < REPS; r++) reps.push(await b.rep());
  await b.close();
  const decodes = reps.map((x) => x.decode_only_tg).filter((x): x is number => x !== null);
  return { pp: median(reps.map((x) => x.pp)), tg: median(reps.map((x) => x.tg)), decode_only_tg: decodes.length ? median(decodes) : null };
}

async function llamaBench(model: string, threads: string, reps = REPS): Promise<Array<{ threads: number; pp: number; tg: number; cpu: string; backend: string }>> {
  const { stdout } = await promisify(execFile)(join(PEER_BIN, "llama-bench"), ["-m", model, "-p", String(PP), "-n", String(TG), "-t", threads, "-r", String(reps), ...PEER_GPU_LAYERS, "-o", "json"], { maxBuffer: 1 << 24 });
  const rows = JSON.parse(stdout) as Array<{ n_threads: number; n_prompt: number; n_gen: number; avg_ts: number; cpu_info: string; backends: string }>;
  const byThreads = new Map<number, { threads: number; pp: number; tg: number; cpu: string; backend: string }>();
  for (const r of rows) {
    const e = byThreads.get(r.n_threads) ?? { threads: r.n_threads, pp: 0, tg: 0, cpu: r.cpu_info, backend: r.backends };
    if (r.n_prompt > 0) e.pp = r.avg_ts;
    else e.tg = r.avg_ts;
    byThreads.set(r.n_threads, e);
  }
  return [...byThreads.values()];
}

// ---- sections --------------------------------------------------------------------------------------------

const results: Record<string, unknown> = {};
const md: string[] = [];
const table = (head: string[], rows: Array<Array<string | number>>) => {
  md.push(`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`), "");
};
/** A ratio as the tables print it. */
const times = (x: number | null) => (x === null ? "n/a" : `${x.toFixed(2)}×`);
const ratio = (a: number, b: number | null | undefined) => times(b ? a / b : null);

const loadAverage = () => Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
/** The machine's 1-minute load average as each section starts (other work on this shared machine). */
const loadBySection: Record<string, number> = {};

async function waitQuiet(): Promise<void> {
  const limit = Number(opt("wait-quiet", "0"));
  if (!limit) return;
  const deadline = Date.now() + 45 * 60_000;
  while (loadAverage() >= limit && Date.now() < deadline) {
    console.log(`waiting for a quieter machine: load average ${loadAverage()} ≥ ${limit}`);
    await sleep(15_000);
  }
}

async function main(): Promise<void> {
  // The fleet bench starts its own daemons and HAProxy (bench/fleet.ts).
  if (ONLY.has("fleet")) {
    await (await import("./fleet.ts")).runFleetBench(args);
    if (ONLY.size === 1) return;
    ONLY.delete("fleet");
  }
  const model = await modelPath();
  await waitQuiet();
  const peers = peersAvailable();
  launch = prepareLaunch(launchOptions(args));
  process.once("exit", () => launch.cleanup());
  const llama = await getLlama({
    gpu: GPU === "off" ? false : "auto",
    build: "never",
    maxThreads: 0,
    // Info level so llama.cpp's perf counters reach us; everything but errors is dropped.
    logLevel: LlamaLogLevel.info,
    logger: (level, message) => {
      if (message.includes("llama_perf_context_print")) perfLines.push(message);
      else if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) console.error(message);
    },
  });
  const bindingCpu = llama.systemInfo.replace(/\s+/g, " ").trim();
  const machine = {
    cpu: cpus()[0]?.model ?? "unknown",
    logical_cpus: availableParallelism(),
    memory_gib: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
    node_llama_cpp: JSON.parse(readFileSync(join(ROOT, "node_modules", "node-llama-cpp", "package.json"), "utf8")).version,
    llama_cpp: JSON.parse(readFileSync(join(ROOT, "node_modules", "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8")).tag,
    binding_gpu: llama.gpu,
    binding_cpu_variant: `${llama.buildType} binary; ${bindingCpu}`,
    peers: peers ? `llama-bench/llama-server from ${shortPath(PEER_BIN)}, built ${peerCpuFlags().description}` : "not built (npm run bench:peers)",
    daemon: launch.description,
  };
  results.machine = machine;
  // Relative to the checkout, as the docs name files: results are committed and name no path of a machine.
  results.model = relative(ROOT, model);
  results.threads = THREADS;
  md.push(
    `# Benchmarks`,
    "",
    `Generated by \`npm run bench -- ${args.join(" ")}\` on ${new Date().toISOString().slice(0, 10)}. Ratios compare Kekahyde with llama.cpp's own tools, and ` +
      `with the same daemon running its engine in-process (\`bench/inprocess-daemon.ts\`: node-llama-cpp inside the daemon, as before each model had an ` +
      `engine process of its own), on the same model, machine and run.`,
    "",
  );
  md.push(`- machine: ${machine.cpu}, ${machine.logical_cpus} logical CPUs, ${machine.memory_gib} GiB; Node ${machine.node}`);
  md.push(`- model: \`${shortPath(model)}\` (generated, seeded random weights); threads: ${THREADS}; prompt ${PP} tokens, generation ${TG} tokens, median of ${REPS}`);
  md.push(`- node-llama-cpp ${machine.node_llama_cpp} (llama.cpp ${machine.llama_cpp}), in the daemon and in-process: ${machine.binding_cpu_variant}`);
  md.push(`- daemons: ${machine.daemon}`);
  md.push(`- peers: ${machine.peers}`, "");
  if (!peers) console.log("llama.cpp peers are not built: run `npm run bench:peers`; measuring Kekahyde and the binding only");

  if (ONLY.has("pp-tg")) {
    console.log("1. prompt processing and generation ...");
    loadBySection["1. prompt processing and generation ..."] = loadAverage();
    // The contenders take turns, one repetition each per round (the two daemons in alternating order), so
    // that this machine's drift (the same llama-bench run has measured 150 and 225 tokens/s within minutes)
    // falls on all of them alike; ratios are the median of each round's ratio.
    const daemons = { process: await startKekahyde(THREADS), "in-process": await startKekahyde(THREADS, [], "in-process") };
    for (const d of Object.values(daemons)) await loadModel(d, { path: model });
    const b = await openBinding(llama, model, THREADS);
    const rounds: Array<{ daemon: PpTg; inprocess: PpTg; binding: BindingRun; llama_bench: PpTg | null }> = [];
    for (let r = 0; r < REPS; r++) {
      const got: Partial<Record<EngineKind, PpTg>> = {};
      for (const kind of turns(r)) got[kind] = await kekahydeRep(daemons[kind].url);
      const binding = await b.rep();
      const bench = peers ? (await llamaBench(model, String(THREADS), 1))[0] : null;
      rounds.push({ daemon: got.process!, inprocess: got["in-process"]!, binding, llama_bench: bench ? { pp: bench.pp, tg: bench.tg } : null });
      console.log(`   round ${r + 1}: tg ${round(got.process!.tg, 1)} / ${round(got["in-process"]!.tg, 1)} / binding ${round(binding.tg, 1)} / llama-bench ${bench ? round(bench.tg, 1) : "n/a"}`);
    }
    await b.close();
    // The process boundary per token: longer generations, more rounds, wall and CPU time, taking turns.
    console.log("1b. the process boundary per token ...");
    loadBySection["1b. the process boundary per token ..."] = loadAverage();
    const boundaryRounds: Array<Record<EngineKind, PerToken>> = [];
    for (let r = 0; r < Math.max(10, 2 * REPS); r++) {
      const got: Partial<Record<EngineKind, PerToken>> = {};
      for (const kind of turns(r)) got[kind] = await perTokenRep(daemons[kind]);
      boundaryRounds.push(got as Record<EngineKind, PerToken>);
      const [p, i] = [got.process!, got["in-process"]!];
      console.log(`   round ${r + 1}: ms a token (Kekahyde vs in-process): wall ${round(p.wall_ms, 3)} vs ${round(i.wall_ms, 3)}, median gap ${round(p.gap_ms, 3)} vs ${round(i.gap_ms, 3)}, CPU ${round(p.cpu_ms, 3)} vs ${round(i.cpu_ms, 3)}`);
    }
    for (const d of Object.values(daemons)) await d.stop();
    const ipc = await ipcMicrobench();
    const bmed = (f: (x: (typeof boundaryRounds)[number]) => number) => median(boundaryRounds.map(f));
    const perToken = {
      tokens: TG_LONG,
      rounds: boundaryRounds,
      wall_ms: { process: bmed((x) => x.process.wall_ms), inprocess: bmed((x) => x["in-process"].wall_ms) },
      cpu_ms: { process: bmed((x) => x.process.cpu_ms), inprocess: bmed((x) => x["in-process"].cpu_ms) },
      // Medians of each round's difference and ratio (the two measured back to back).
      wall_diff_ms: bmed((x) => x.process.wall_ms - x["in-process"].wall_ms),
      wall_diff_ms_quartiles: [pct(boundaryRounds.map((x) => x.process.wall_ms - x["in-process"].wall_ms), 25), pct(boundaryRounds.map((x) => x.process.wall_ms - x["in-process"].wall_ms), 75)],
      cpu_diff_ms: bmed((x) => x.process.cpu_ms - x["in-process"].cpu_ms),
      cpu_diff_ms_quartiles: [pct(boundaryRounds.map((x) => x.process.cpu_ms - x["in-process"].cpu_ms), 25), pct(boundaryRounds.map((x) => x.process.cpu_ms - x["in-process"].cpu_ms), 75)],
      tg_ratio: bmed((x) => x["in-process"].wall_ms / x.process.wall_ms),
      gap_ms: { process: bmed((x) => x.process.gap_ms), inprocess: bmed((x) => x["in-process"].gap_ms) },
      gap_diff_ms: bmed((x) => x.process.gap_ms - x["in-process"].gap_ms),
      gap_diff_ms_quartiles: [pct(boundaryRounds.map((x) => x.process.gap_ms - x["in-process"].gap_ms), 25), pct(boundaryRounds.map((x) => x.process.gap_ms - x["in-process"].gap_ms), 75)],
      gap_tg_ratio: bmed((x) => x["in-process"].gap_ms / x.process.gap_ms),
      ipc_microbench: ipc,
    };
    const med = (f: (x: (typeof rounds)[number]) => number | null | undefined): number | null => {
      const xs = rounds.map(f).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
      return xs.length ? median(xs) : null;
    };
    const cell = (x: number | null, d = 1) => (x === null ? "n/a" : round(x, d));
    const summary = {
      daemon: { pp: med((x) => x.daemon.pp), tg: med((x) => x.daemon.tg) },
      inprocess: { pp: med((x) => x.inprocess.pp), tg: med((x) => x.inprocess.tg) },
      binding: { pp: med((x) => x.binding.pp), tg: med((x) => x.binding.tg), decode_only_tg: med((x) => x.binding.decode_only_tg) },
      llama_bench: { pp: med((x) => x.llama_bench?.pp), tg: med((x) => x.llama_bench?.tg) },
      ratios: {
        pp_vs_inprocess: med((x) => x.daemon.pp / x.inprocess.pp),
        tg_vs_inprocess: med((x) => x.daemon.tg / x.inprocess.tg),
        pp_vs_llama_bench: med((x) => x.llama_bench && x.daemon.pp / x.llama_bench.pp),
        tg_vs_llama_bench: med((x) => x.llama_bench && x.daemon.tg / x.llama_bench.tg),
        pp_vs_binding: med((x) => x.daemon.pp / x.binding.pp),
        tg_vs_binding: med((x) => x.daemon.tg / x.binding.tg),
        inprocess_tg_vs_binding: med((x) => x.inprocess.tg / x.binding.tg),
        decode_only_vs_llama_bench: med((x) => x.llama_bench && x.binding.decode_only_tg && x.binding.decode_only_tg / x.llama_bench.tg),
      },
      // What the process boundary costs: each round's time per token (and per prompt request) of the daemon
      // with engine processes minus that of the daemon with the engine in-process, measured back to back.
      process_boundary: {
        ms_per_token: med((x) => 1000 / x.daemon.tg - 1000 / x.inprocess.tg),
        ms_per_token_each_round: rounds.map((x) => round(1000 / x.daemon.tg - 1000 / x.inprocess.tg, 3)),
        ms_per_prompt_request: med((x) => (PP * 1000) / x.daemon.pp - (PP * 1000) / x.inprocess.pp),
      },
    };
    results.pp_tg = { ...summary, rounds, per_token: perToken };
    const { daemon, inprocess, binding, llama_bench: bench, ratios, process_boundary: boundary } = summary;
    md.push(`## 1. Prompt processing and generation (tokens/s; median of ${REPS} rounds, contenders taking turns; ratios are medians of each round's ratio)`, "");
    table(["", "Kekahyde (HTTP)", "engine in-process (HTTP)", "binding in-process", "llama-bench", "Kekahyde / engine in-process", "Kekahyde / llama-bench", "Kekahyde / binding"], [
      [`pp${PP}`, cell(daemon.pp), cell(inprocess.pp), cell(binding.pp), cell(bench.pp), times(ratios.pp_vs_inprocess), times(ratios.pp_vs_llama_bench), times(ratios.pp_vs_binding)],
      [`tg${TG}`, cell(daemon.tg), cell(inprocess.tg), cell(binding.tg), cell(bench.tg), times(ratios.tg_vs_inprocess), times(ratios.tg_vs_llama_bench), times(ratios.tg_vs_binding)],
      [`tg${TG} inside llama_decode alone`, "", "", cell(binding.decode_only_tg), cell(bench.tg), "", times(ratios.decode_only_vs_llama_bench), ""],
    ]);
    if (binding.decode_only_tg && binding.tg && inprocess.tg && boundary.ms_per_token !== null) {
      md.push(
        `Per generated token: ${round(1000 / binding.decode_only_tg)} ms inside llama_decode (llama.cpp's perf counters, binding in-process), ` +
          `${round(1000 / binding.tg - 1000 / binding.decode_only_tg)} ms around it in the binding (JavaScript, sampling, hand-offs between the event loop ` +
          `and the thread that runs the decode), ${round(1000 / inprocess.tg - 1000 / binding.tg)} ms more in the daemon with the engine in-process (its own token loop instead of the binding's LlamaCompletion, HTTP, its event loop), ` +
          `${round(boundary.ms_per_token, 3)} ms more through the process boundary (IPC; the median over rounds of 1000/tg of Kekahyde minus 1000/tg of the engine ` +
          `in-process, both measured in the same round; each round: ${boundary.ms_per_token_each_round.join(", ")})` +
          (bench.tg ? `; llama-bench: ${round(1000 / bench.tg)} ms, which includes no sampling.` : "."),
        "",
      );
    }
    const r3 = (x: number) => round(x, 3);
    md.push(
      `### 1b. The process boundary, per generated token (${perToken.rounds.length} rounds taking turns; a ${TG_LONG}-token minus a 1-token request, divided by ${TG_LONG - 1}; ms)`,
      "",
    );
    table(["", "Kekahyde", "engine in-process", "difference (median of each round's; quartiles)", "Kekahyde / engine in-process, tokens/s"], [
      ["wall time per token", r3(perToken.wall_ms.process), r3(perToken.wall_ms.inprocess), `${r3(perToken.wall_diff_ms)} (${perToken.wall_diff_ms_quartiles.map(r3).join(" to ")})`, times(perToken.tg_ratio)],
      ["median gap between streamed tokens", r3(perToken.gap_ms.process), r3(perToken.gap_ms.inprocess), `${r3(perToken.gap_diff_ms)} (${perToken.gap_diff_ms_quartiles.map(r3).join(" to ")})`, times(perToken.gap_tg_ratio)],
      ["CPU time per token, the daemon and its engine processes", r3(perToken.cpu_ms.process), r3(perToken.cpu_ms.inprocess), `${r3(perToken.cpu_diff_ms)} (${perToken.cpu_diff_ms_quartiles.map(r3).join(" to ")})`, ""],
    ]);
    md.push(
      `The IPC message alone (a child process sending 20,000 token messages shaped like the engine host's, each after the previous one's send callback; this process receiving them): ` +
        `${round(ipc.wall_us, 1)} µs a message end to end, ${round(ipc.sender_cpu_us, 1)} µs of CPU in the sender and ${round(ipc.receiver_cpu_us, 1)} µs in the receiver.`,
      "",
    );
  }

  if (ONLY.has("e2e") || ONLY.has("status") || ONLY.has("cancel") || ONLY.has("load")) {
    // Load and memory first, on fresh daemons: Kekahyde with its spare engine process ready, the daemon with
    // the engine in-process as it starts (its first load imports node-llama-cpp and tests its binary), and
    // llama-server from its start; a few rounds, taking turns. The last of each stays for sections 2-4.
    console.log("5. load time and memory (measured first, on fresh daemons) ...");
    loadBySection["5. load time and memory (measured first, on fresh daemons) ..."] = loadAverage();
    const loadRounds: Array<{ process: Record<string, number>; inprocess: Record<string, number>; llama_server: Record<string, number> | null }> = [];
    const last: Partial<Record<EngineKind, Kekahyde>> = {};
    let server: (Daemon & { startMs: number }) | null = null;
    const loadRoundCount = ONLY.has("load") ? Math.min(REPS, 3) : 1;
    for (let r = 0; r < loadRoundCount; r++) {
      const row: Partial<(typeof loadRounds)[number]> = {};
      for (const kind of turns(r)) {
        await last[kind]?.stop();
        const d = await startKekahyde(THREADS, [], kind);
        last[kind] = d;
        if (kind === "process") {
          const [spare] = await enginesSettled(d, 1);
          const idle = { daemon_idle_rss: rssOf(d.pid), spare_idle_rss: rssOf(spare) };
          const first = await timed(() => loadModel(d, { path: model }));
          const enginePid = (JSON.parse((await http(d.url, "GET", "/status")).body) as { models: Array<{ engine_pid: number }> }).models[0].engine_pid;
          const engines = await enginesSettled(d, 2);
          const nextSpare = engines.find((pid) => pid !== enginePid)!;
          const loaded = { daemon_loaded_rss: rssOf(d.pid), engine_loaded_rss: rssOf(enginePid), next_spare_rss: rssOf(nextSpare) };
          await http(d.url, "POST", "/unload_model");
          await enginesSettled(d, 1);
          const next = await timed(() => loadModel(d, { path: model }));
          await enginesSettled(d, 2);
          row.process = { first_load_ms: first, next_load_ms: next, ...idle, ...loaded, total_loaded_rss: loaded.daemon_loaded_rss + loaded.engine_loaded_rss + loaded.next_spare_rss };
        } else {
          await sleep(1000);
          const idleRss = rssOf(d.pid);
          const first = await timed(() => loadModel(d, { path: model }));
          await enginesSettled(d, 0);
          const loadedRss = rssOf(d.pid);
          await http(d.url, "POST", "/unload_model");
          const next = await timed(() => loadModel(d, { path: model }));
          row.inprocess = { first_load_ms: first, next_load_ms: next, daemon_idle_rss: idleRss, daemon_loaded_rss: loadedRss, growth_rss: loadedRss - idleRss };
        }
      }
      if (peers) {
        await server?.stop();
        server = await startLlamaServer(model, THREADS);
        row.llama_server = { start_ms: server.startMs, rss: rssOf(server.child.pid!) };
      }
      loadRounds.push({ process: row.process!, inprocess: row.inprocess!, llama_server: row.llama_server ?? null });
    }
    const dp = last.process!;
    const di = last["in-process"]!;
    const daemons: Record<EngineKind, Kekahyde> = { process: dp, "in-process": di };
    const lmed = (f: (x: (typeof loadRounds)[number]) => number | null | undefined): number | null => {
      const xs = loadRounds.map(f).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
      return xs.length ? median(xs) : null;
    };

    if (ONLY.has("e2e")) {
      console.log("2. end-to-end request ...");
    loadBySection["2. end-to-end request ..."] = loadAverage();
      const rows: Array<{ process: number; inprocess: number; process_ttft: number; inprocess_ttft: number; llama_server: number | null; llama_server_ttft: number | null }> = [];
      for (let r = 0; r < REPS; r++) {
        const prompt = freshPrompt(64);
        const wall: Partial<Record<EngineKind, number>> = {};
        const ttft: Partial<Record<EngineKind, number>> = {};
        for (const kind of turns(r)) {
          wall[kind] = ok(await http(daemons[kind].url, "POST", "/run_prompt", { prompt, raw: true, max_tokens: TG, temperature: 0 })).ms;
          ttft[kind] = ok(await http(daemons[kind].url, "POST", "/run_prompt", { prompt: freshPrompt(64), raw: true, max_tokens: TG, temperature: 0 }, { accept: "text/event-stream" })).events[0];
        }
        let s: number | null = null;
        let st: number | null = null;
        if (server) {
          s = (await http(server.url, "POST", "/completion", { prompt, n_predict: TG, temperature: 0, cache_prompt: false })).ms;
          st = (await http(server.url, "POST", "/completion", { prompt: freshPrompt(64), n_predict: TG, temperature: 0, cache_prompt: false, stream: true })).events[0];
        }
        rows.push({ process: wall.process!, inprocess: wall["in-process"]!, process_ttft: ttft.process!, inprocess_ttft: ttft["in-process"]!, llama_server: s, llama_server_ttft: st });
      }
      const emed = (f: (x: (typeof rows)[number]) => number | null): number | null => {
        const xs = rows.map(f).filter((x): x is number => typeof x === "number" && Number.isFinite(x));
        return xs.length ? median(xs) : null;
      };
      const e2e = {
        kekahyde_ms: emed((x) => x.process),
        kekahyde_ttft_ms: emed((x) => x.process_ttft),
        inprocess_ms: emed((x) => x.inprocess),
        inprocess_ttft_ms: emed((x) => x.inprocess_ttft),
        llama_server_ms: emed((x) => x.llama_server),
        llama_server_ttft_ms: emed((x) => x.llama_server_ttft),
        ratios: {
          wall_vs_inprocess: emed((x) => x.process / x.inprocess),
          ttft_vs_inprocess: emed((x) => x.process_ttft / x.inprocess_ttft),
          wall_vs_llama_server: emed((x) => x.llama_server && x.process / x.llama_server),
          ttft_vs_llama_server: emed((x) => x.llama_server_ttft && x.process_ttft / x.llama_server_ttft),
        },
        rounds: rows,
      };
      results.e2e = e2e;
      const c = (x: number | null) => (x === null ? "n/a" : round(x, 1));
      md.push(`## 2. One request end to end (64-token prompt, ${TG} tokens, greedy; ms; median of ${REPS} rounds taking turns, ratios are medians of each round's ratio)`, "");
      table(["", "Kekahyde /run_prompt", "engine in-process /run_prompt", "llama-server /completion", "Kekahyde / engine in-process", "Kekahyde / llama-server"], [
        ["wall time", c(e2e.kekahyde_ms), c(e2e.inprocess_ms), c(e2e.llama_server_ms), times(e2e.ratios.wall_vs_inprocess), times(e2e.ratios.wall_vs_llama_server)],
        ["time to first token (streaming)", c(e2e.kekahyde_ttft_ms), c(e2e.inprocess_ttft_ms), c(e2e.llama_server_ttft_ms), times(e2e.ratios.ttft_vs_inprocess), times(e2e.ratios.ttft_vs_llama_server)],
      ]);
    }

    if (ONLY.has("status")) {
      console.log("3. /status under load while generating ...");
    loadBySection["3. /status under load while generating ..."] = loadAverage();
      // Each window: a long generation, and 8 clients asking GET routes for 3 s (a daemon's routes interleaved,
      // request by request, so that /status and /health see the same moments of the generation).
      const load = async (url: string, paths: string[], kekahyde: boolean) => {
        // A long generation that is ended by dropping its connection (both servers cancel on disconnect).
        const stop = new AbortController();
        const body = kekahyde ? { prompt: freshPrompt(8), raw: true, max_tokens: 100_000, temperature: 0 } : { prompt: freshPrompt(8), n_predict: 100_000, temperature: 0 };
        const gen = http(url, "POST", kekahyde ? "/run_prompt" : "/completion", body, {}, stop.signal);
        await sleep(300);
        const latencies: Record<string, number[]> = Object.fromEntries(paths.map((p) => [p, []]));
        const deadline = performance.now() + 3_000;
        let sent = 0;
        await Promise.all(
          Array.from({ length: 8 }, async (_, client) => {
            let i = client;
            while (sent < 1500 && performance.now() < deadline) {
              sent++;
              const path = paths[i++ % paths.length];
              latencies[path].push((await http(url, "GET", path)).ms);
            }
          }),
        );
        stop.abort();
        await gen.catch(() => null);
        await sleep(200);
        return latencies;
      };
      // The daemon's own view (its request-duration histogram): what it spends on a request once it has it.
      const buckets = async (route: string) => {
        const text = (await http(dp.url, "GET", "/metrics")).body;
        const out = new Map<number, number>();
        for (const m of text.matchAll(/^kekahyde_http_request_duration_seconds_bucket\{le="([^"]+)",route="([^"]+)",method="GET"\} (\d+)$/gm)) {
          if (m[2] === route) out.set(m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[3]));
        }
        return out;
      };
      /** The smallest bucket bound under which p% of the requests between two readings fell, in ms. */
      const bucketPct = (before: Map<number, number>, after: Map<number, number>, p: number) => {
        const bounds = [...after.keys()].sort((a, b) => a - b);
        const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
        const bound = bounds.find((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0) >= (p / 100) * total);
        return bound === undefined ? null : bound * 1000;
      };
      // Rounds taking turns: Kekahyde (/status and /health interleaved), the engine in-process (/status),
      // llama-server (/health).
      const before = await buckets("/status");
      const contenders = server ? (["kekahyde", "inprocess", "llama_server"] as const) : (["kekahyde", "inprocess"] as const);
      type StatusRound = { status: number[]; health: number[]; inprocess: number[]; llama_server: number[] | null };
      const statusRounds: StatusRound[] = [];
      for (let r = 0; r < Math.max(3, REPS); r++) {
        const got: StatusRound = { status: [], health: [], inprocess: [], llama_server: null };
        for (const c of [...contenders.slice(r % contenders.length), ...contenders.slice(0, r % contenders.length)]) {
          if (c === "kekahyde") {
            const l = await load(dp.url, ["/status", "/health"], true);
            [got.status, got.health] = [l["/status"], l["/health"]];
          } else if (c === "inprocess") got.inprocess = (await load(di.url, ["/status"], true))["/status"];
          else got.llama_server = (await load(server!.url, ["/health"], false))["/health"];
        }
        statusRounds.push(got);
        console.log(`   round ${r + 1}: p99 /status ${round(pct(got.status, 99))}, /health ${round(pct(got.health, 99))}, in-process /status ${round(pct(got.inprocess, 99))}, llama-server /health ${got.llama_server ? round(pct(got.llama_server, 99)) : "n/a"} ms`);
      }
      const after = await buckets("/status");
      const inside = { p50_at_most: bucketPct(before, after, 50), p99_at_most: bucketPct(before, after, 99) };
      const pooled = (f: (x: StatusRound) => number[] | null) => {
        const xs = statusRounds.flatMap((x) => f(x) ?? []);
        return { p50: pct(xs, 50), p99: pct(xs, 99), n: xs.length };
      };
      const ks = pooled((x) => x.status);
      const kh = pooled((x) => x.health);
      const is = pooled((x) => x.inprocess);
      const ss = server ? pooled((x) => x.llama_server) : null;
      const roundRatio = (f: (x: StatusRound) => number | null) => {
        const xs = statusRounds.map(f).filter((x): x is number => x !== null && Number.isFinite(x));
        return xs.length ? median(xs) : null;
      };
      const ratios = {
        status_p99_vs_llama_server_health: roundRatio((x) => x.llama_server && pct(x.status, 99) / pct(x.llama_server, 99)),
        health_p99_vs_llama_server_health: roundRatio((x) => x.llama_server && pct(x.health, 99) / pct(x.llama_server, 99)),
        status_p99_vs_own_health: roundRatio((x) => pct(x.status, 99) / pct(x.health, 99)),
      };
      results.status_latency = { kekahyde: ks, kekahyde_server_side: inside, kekahyde_health: kh, inprocess: is, llama_server_health: ss, ratios, rounds: statusRounds.map((x) => ({ status_p99: pct(x.status, 99), health_p99: pct(x.health, 99), inprocess_p99: pct(x.inprocess, 99), llama_server_p99: x.llama_server ? pct(x.llama_server, 99) : null })) };
      const bound = (x: number | null) => (x === null ? "n/a" : `≤ ${x}`);
      md.push(`## 3. Status latency under load while a generation runs (8 concurrent clients on the same machine, 3 s windows, ${statusRounds.length} rounds taking turns; Kekahyde's /status and /health interleaved in the same windows; ms, percentiles of all rounds' requests)`, "");
      table(["", "Kekahyde GET /status", "Kekahyde GET /status, inside the daemon", "Kekahyde GET /health", "engine in-process GET /status", "llama-server GET /health"], [
        ["p50", round(ks.p50), bound(inside.p50_at_most), round(kh.p50), round(is.p50), ss ? round(ss.p50) : "n/a"],
        ["p99", round(ks.p99), bound(inside.p99_at_most), round(kh.p99), round(is.p99), ss ? round(ss.p99) : "n/a"],
        ["requests", ks.n, ks.n, kh.n, is.n, ss ? ss.n : "n/a"],
      ]);
      md.push(
        `Per round, p99 of Kekahyde's /status / llama-server's /health: median ${times(ratios.status_p99_vs_llama_server_health)} (Kekahyde's /health: ${times(ratios.health_p99_vs_llama_server_health)}; /status / its own /health: ${times(ratios.status_p99_vs_own_health)}). ` +
          `Target: /status p99 ≤ llama-server's /health p99: ${ratios.status_p99_vs_llama_server_health === null ? "n/a" : ratios.status_p99_vs_llama_server_health <= 1 ? "holds" : "does not hold"}.`,
        "",
      );
    }

    if (ONLY.has("cancel")) {
      console.log("4. cancel latency ...");
    loadBySection["4. cancel latency ..."] = loadAverage();
      // Per daemon: POST /stop → the generating response complete; when /stop itself is answered (once the
      // engine has ended its token in flight); token times from the same runs (gaps between streamed events:
      // what a stop waits for is the token in flight, and on a noisy machine a slow token makes the tail).
      const runs = Math.max(10, REPS * 5);
      const out: Record<EngineKind, { lat: number[]; stopped: number[]; gaps: number[] }> = {
        process: { lat: [], stopped: [], gaps: [] },
        "in-process": { lat: [], stopped: [], gaps: [] },
      };
      for (let r = 0; r < runs; r++) {
        for (const kind of turns(r)) {
          const { lat, stopped, gaps } = out[kind];
          const d = daemons[kind];
          // Stop at a random point of a token while tokens are flowing (not during the prompt's evaluation).
          let generating!: () => void;
          const flowing = new Promise<void>((resolve) => (generating = resolve));
          const gen = http(d.url, "POST", "/run_prompt", { prompt: freshPrompt(8), raw: true, max_tokens: 100_000, temperature: 0 }, { accept: "text/event-stream" }, undefined, (n) => {
            if (n >= 3) generating();
          });
          // A generation that ends before its third token (an error) must not leave the bench waiting forever.
          await Promise.race([flowing, gen.then((res) => Promise.reject(new Error(`the generation to stop ended first: ${res.status} ${res.body.slice(-300)}`)))]);
          await sleep(Math.random() * (gaps.length ? pct(gaps, 50) : 10));
          const t = performance.now();
          const stop = http(d.url, "POST", "/stop").then(() => performance.now() - t);
          const { events } = await gen;
          lat.push(performance.now() - t);
          stopped.push(await stop);
          const tokens = events.slice(0, -1); // the last event is "done"
          for (let i = 2; i < tokens.length; i++) gaps.push(tokens[i] - tokens[i - 1]);
        }
      }
      const summarize = ({ lat, stopped, gaps }: { lat: number[]; stopped: number[]; gaps: number[] }) => ({
        p50: pct(lat, 50),
        p99: pct(lat, 99),
        runs: lat.length,
        stop_answered_p50: pct(stopped, 50),
        stop_answered_p99: pct(stopped, 99),
        token_ms_p50: gaps.length ? pct(gaps, 50) : null,
        token_ms_p99: gaps.length ? pct(gaps, 99) : null,
      });
      const kp = summarize(out.process);
      const ki = summarize(out["in-process"]);
      results.cancel_ms = { ...kp, inprocess: ki };
      const r2 = (x: number | null) => (x === null ? "n/a" : round(x));
      md.push(`## 4. Cancel latency: POST /stop → the generating response complete (ms, ${runs} runs each, taking turns; token times from the same runs)`, "");
      table(["", "Kekahyde p50", "Kekahyde p99", "engine in-process p50", "engine in-process p99"], [
        ["POST /stop → the generating response complete", r2(kp.p50), r2(kp.p99), r2(ki.p50), r2(ki.p99)],
        ["POST /stop → its own answer (the engine has ended its token)", r2(kp.stop_answered_p50), r2(kp.stop_answered_p99), r2(ki.stop_answered_p50), r2(ki.stop_answered_p99)],
        ["one token", r2(kp.token_ms_p50), r2(kp.token_ms_p99), r2(ki.token_ms_p50), r2(ki.token_ms_p99)],
      ]);
      md.push(`Target: one token + 20 ms at p99 = ${kp.token_ms_p50 ? round(kp.token_ms_p50 + 20) : "n/a"} ms (token p50).`, "");
    }

    if (ONLY.has("load")) {
      const p = (k: string) => lmed((x) => x.process[k]);
      const i = (k: string) => lmed((x) => x.inprocess[k]);
      const s = (k: string) => lmed((x) => x.llama_server?.[k]);
      const load = {
        rounds: loadRounds,
        kekahyde_load_ms: p("first_load_ms"),
        kekahyde_reload_ms: p("next_load_ms"),
        inprocess_load_ms: i("first_load_ms"),
        inprocess_reload_ms: i("next_load_ms"),
        llama_server_start_ms: s("start_ms"),
        kekahyde_idle_rss: p("daemon_idle_rss"),
        spare_idle_rss: p("spare_idle_rss"),
        kekahyde_loaded_rss: p("daemon_loaded_rss"),
        engine_loaded_rss: p("engine_loaded_rss"),
        next_spare_rss: p("next_spare_rss"),
        kekahyde_total_loaded_rss: p("total_loaded_rss"),
        inprocess_idle_rss: i("daemon_idle_rss"),
        inprocess_loaded_rss: i("daemon_loaded_rss"),
        inprocess_growth_rss: i("growth_rss"),
        llama_server_rss: s("rss"),
        ratios: {
          first_load_vs_inprocess: lmed((x) => x.process.first_load_ms / x.inprocess.first_load_ms),
          next_load_vs_inprocess: lmed((x) => x.process.next_load_ms / x.inprocess.next_load_ms),
          first_load_vs_llama_server: lmed((x) => x.llama_server && x.process.first_load_ms / x.llama_server.start_ms),
          next_load_vs_llama_server: lmed((x) => x.llama_server && x.process.next_load_ms / x.llama_server.start_ms),
        },
        // What one engine process costs beyond the model itself: its RSS with the model loaded minus what the
        // same load added to the in-process daemon (node-llama-cpp's module graph and the model's memory).
        engine_process_overhead_rss: lmed((x) => x.process.engine_loaded_rss - x.inprocess.growth_rss),
      };
      results.load = load;
      const ms = (x: number | null) => (x === null ? "n/a" : round(x, 0));
      const mb = (x: number | null) => (x === null ? "" : round(x / 1e6, 1));
      md.push(`## 5. Model load and memory (fresh daemons, median of ${loadRoundCount} rounds taking turns; RSS from /proc)`, "");
      table(["", "Kekahyde", "engine in-process", "llama-server", "Kekahyde / engine in-process", "Kekahyde / llama-server"], [
        ["first load on a fresh daemon (Kekahyde: spare engine ready), request → answer / start → healthy, ms", ms(load.kekahyde_load_ms), ms(load.inprocess_load_ms), ms(load.llama_server_start_ms), times(load.ratios.first_load_vs_inprocess), times(load.ratios.first_load_vs_llama_server)],
        ["next load (unload, then load again), ms", ms(load.kekahyde_reload_ms), ms(load.inprocess_reload_ms), ms(load.llama_server_start_ms), times(load.ratios.next_load_vs_inprocess), times(load.ratios.next_load_vs_llama_server)],
        ["RSS idle: the daemon process, MB (Kekahyde: with its spare engine running)", mb(load.kekahyde_idle_rss), mb(load.inprocess_idle_rss), "", "", ""],
        ["RSS idle: the spare engine process, MB", mb(load.spare_idle_rss), "", "", "", ""],
        ["RSS with the model: the daemon process, MB", mb(load.kekahyde_loaded_rss), mb(load.inprocess_loaded_rss), mb(load.llama_server_rss), "", ""],
        ["RSS with the model: its engine process / the in-process daemon's growth, MB", mb(load.engine_loaded_rss), mb(load.inprocess_growth_rss), "", ratio(load.engine_loaded_rss ?? 0, load.inprocess_growth_rss), ""],
        ["RSS with the model: the next spare engine process, MB", mb(load.next_spare_rss), "", "", "", ""],
        ["RSS with the model: all processes, MB", mb(load.kekahyde_total_loaded_rss), mb(load.inprocess_loaded_rss), mb(load.llama_server_rss), ratio(load.kekahyde_total_loaded_rss ?? 0, load.inprocess_loaded_rss), ratio(load.kekahyde_total_loaded_rss ?? 0, load.llama_server_rss)],
      ]);
      md.push(
        `One engine process costs ${mb(load.engine_process_overhead_rss)} MB more than the same model in the daemon (its RSS with the model minus the in-process daemon's growth on loading it), ` +
          `and the spare ${mb(load.spare_idle_rss)} MB. Target: the daemon process idle ≤ 100 MB (with the spare running): ${load.kekahyde_idle_rss === null ? "n/a" : load.kekahyde_idle_rss <= 100e6 ? "holds" : "does not hold"}.`,
        "",
      );
    }
    await dp.stop();
    await di.stop();
    await server?.stop();
  }

  if (ONLY.has("threads")) {
    console.log("6. thread scaling ...");
    loadBySection["6. thread scaling ..."] = loadAverage();
    const rows: Array<Array<string | number>> = [];
    const bench = peers ? await llamaBench(model, Array.from({ length: availableParallelism() }, (_, i) => i + 1).join(",")) : [];
    const scaling = [];
    for (let t = 1; t <= availableParallelism(); t++) {
      // Both daemons loaded at once, taking turns rep by rep.
      const daemons = { process: await startKekahyde(t), "in-process": await startKekahyde(t, [], "in-process") };
      for (const d of Object.values(daemons)) await loadModel(d, { path: model });
      const reps: Record<EngineKind, PpTg[]> = { process: [], "in-process": [] };
      for (let r = 0; r < REPS; r++) for (const kind of turns(r)) reps[kind].push(await kekahydeRep(daemons[kind].url));
      for (const d of Object.values(daemons)) await d.stop();
      const k = { pp: median(reps.process.map((x) => x.pp)), tg: median(reps.process.map((x) => x.tg)) };
      const i = { pp: median(reps["in-process"].map((x) => x.pp)), tg: median(reps["in-process"].map((x) => x.tg)) };
      const b = bench.find((x) => x.threads === t);
      scaling.push({ threads: t, kekahyde: k, inprocess: i, llama_bench: b ?? null });
      rows.push([t, round(k.tg, 1), round(i.tg, 1), b ? round(b.tg, 1) : "n/a", ratio(k.tg, b?.tg), round(k.pp, 1), round(i.pp, 1), b ? round(b.pp, 1) : "n/a", ratio(k.pp, b?.pp)]);
    }
    results.thread_scaling = scaling;
    md.push("## 6. Thread scaling (tokens/s)", "");
    table(["threads", "Kekahyde tg", "engine in-process tg", "llama-bench tg", "Kekahyde / llama-bench", "Kekahyde pp", "engine in-process pp", "llama-bench pp", "Kekahyde / llama-bench"], rows);
  }

  if (ONLY.has("concurrency")) {
    console.log("7. concurrent clients ...");
    loadBySection["7. concurrent clients ..."] = loadAverage();
    const rows: Array<Array<string | number>> = [];
    const out = [];
    for (const clients of [1, 2, 4]) {
      const run = async (url: string, path: string, body: () => unknown) => {
        const t = performance.now();
        await Promise.all(Array.from({ length: clients }, () => http(url, "POST", path, body())));
        return (clients * TG) / ((performance.now() - t) / 1000);
      };
      // Each side decodes `clients` sequences in one batch: Kekahyde --parallel, llama-server -np.
      const d = await startKekahyde(THREADS, ["--parallel", String(clients)]);
      await http(d.url, "POST", "/load_model", { path: model });
      const k = await run(d.url, "/run_prompt", () => ({ prompt: freshPrompt(16), raw: true, max_tokens: TG, temperature: 0 }));
      await d.stop();
      let s: number | null = null;
      if (peers) {
        const server = await startLlamaServer(model, THREADS, clients);
        s = await run(server.url, "/completion", () => ({ prompt: freshPrompt(16), n_predict: TG, temperature: 0, cache_prompt: false }));
        await server.stop();
      }
      out.push({ clients, kekahyde: k, llama_server: s });
      rows.push([clients, round(k, 1), s ? round(s, 1) : "n/a", ratio(k, s)]);
    }
    results.concurrency = out;
    md.push("## 7. Total throughput with concurrent clients (tokens/s; Kekahyde --parallel = clients, llama-server -np = clients)", "");
    table(["clients", "Kekahyde", "llama-server", "ratio"], rows);
  }

  if (ONLY.has("context")) {
    console.log("8. context size ...");
    loadBySection["8. context size ..."] = loadAverage();
    const rows: Array<Array<string | number>> = [];
    const out = [];
    for (const ctx of [512, 2048]) {
      const b = await bindingPpTg(llama, model, THREADS, ctx);
      const d = await startKekahyde(THREADS);
      await http(d.url, "POST", "/load_model", { path: model, context_size: ctx });
      const k = await kekahydePpTg(d.url);
      await d.stop();
      out.push({ context: ctx, kekahyde_tg: k.tg, binding_tg: b.tg });
      rows.push([ctx, round(k.tg, 1), round(b.tg, 1)]);
    }
    results.context = out;
    md.push(`## 8. Generation speed by context size (tokens/s, short sequences; the model's maximum is ${2048})`, "");
    table(["context", "Kekahyde tg", "binding tg"], rows);
  }

  // The newer sections: a failure is written into the results instead of losing the whole run.
  const section = async (name: string, heading: string, f: () => Promise<{ results: unknown; md: string[] }>) => {
    try {
      const r = await f();
      results[name] = r.results;
      md.push(...r.md);
    } catch (e) {
      console.error(`${heading} failed:`, e);
      results[name] = { error: String(e) };
      md.push(`## ${heading}`, "", `Failed in this run: ${String(e).slice(0, 300)}`, "");
    }
  };

  if (ONLY.has("prompt-cache")) {
    console.log("9. prompt cache ...");
    loadBySection["9. prompt cache ..."] = loadAverage();
    const { promptCacheBench } = await import("./promptCache.ts");
    await section("prompt_cache", "9. Prompt cache", () =>
      promptCacheBench({
        llama,
        model,
        reps: REPS,
        startKekahyde: async (parallel) => {
          const d = await startKekahyde(THREADS, ["--parallel", String(parallel)]);
          await loadModel(d, { path: model, context_size: 2048 });
          return d;
        },
        startLlamaServer: peers ? (parallel, ctx, logFile) => startLlamaServer(model, THREADS, parallel, ctx, logFile) : null,
      }),
    );
  }

  if (ONLY.has("first-load")) {
    console.log("10. first load: start to first token ...");
    loadBySection["10. first load ..."] = loadAverage();
    const { firstLoadBench } = await import("./firstLoad.ts");
    await section("first_load", "10. First load", () =>
      firstLoadBench({ model, threads: THREADS, gpu: GPU, reps: Math.max(3, REPS), daemonArgv: launch.argv.process, peerBin: peers ? PEER_BIN : null, peerArgs: PEER_GPU_LAYERS, cwd: ROOT }),
    );
  }

  loadBySection.end = loadAverage();
  results.load_average = loadBySection;
  md.push(`Load average (1 minute) of this shared machine as each section started: ${Object.entries(loadBySection).map(([k, v]) => `${k.split(" ")[0]} ${v}`).join(", ")}.`, "");
  await llama.dispose();
  const date = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  const resultsDir = RESULTS_DIR || join(ROOT, "bench", "results");
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, `${date}.json`), JSON.stringify(results, null, 2));
  const text = md.join("\n");
  console.log("\n" + text);
  writeFileSync(join(resultsDir, `${date}.md`), text + "\n");
  // A partial run (--only) must not replace the full tables in docs/benchmarks.md. A full run replaces what is
  // above the marker and keeps the notes below it (other models' runs, the soak, the local engine build).
  if (opt("only", "") === "" && !RESULTS_DIR) {
    const docs = join(ROOT, "docs", "benchmarks.md");
    const old = existsSync(docs) ? readFileSync(docs, "utf8") : "";
    const kept = old.includes(DOCS_MARKER) ? old.slice(old.indexOf(DOCS_MARKER) + DOCS_MARKER.length) : "\n";
    writeFileSync(docs, `${text}\n${DOCS_MARKER}${kept}`);
  } else console.log(`\n(--only or --out: docs/benchmarks.md left as it was; results in ${shortPath(resultsDir)}/${date}.json and .md)`);
  agent.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
