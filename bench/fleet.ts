// `npm run bench -- --only fleet` (or `tsx bench/fleet.ts [options]`): Kekahyde daemons behind HAProxy,
// as `kekahyde fleet-config` writes its config (docs/scale-out.md). Measures, on this one machine:
//   - the proxy's own cost per request: the same requests straight to a daemon and through HAProxy;
//   - total tokens/s and time to first token (p50, p99) through HAProxy with 1, 2 and 3 daemons, and one
//     daemon without the proxy.
// The daemons share this machine's cores, so 2 and 3 daemons here show contention, not scaling: the
// figures for N machines are computed on paper (one daemon's own figures times N, plus the proxy's cost)
// and printed as such. Not a test: never run in CI. Options:
//   --model small-q8|small-f16|tinyllama-q8|tinyllama-f16|PATH  (default small-q8, as bench/run.ts)
//   --threads N       threads per daemon (default 1)
//   --clients N       concurrent clients per daemon (default 2; each daemon runs --parallel N)
//   --requests N      requests per daemon per configuration (default 16)
//   --tokens N        tokens generated per request (default 32)
//   --source          run the daemons from the TypeScript sources through tsx (default: a compiled snapshot)
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { availableParallelism, cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fleetConfig } from "../src/fleet/haproxyConfig.ts";
import { SMALL_SHAPE, TINYLLAMA_SHAPE, writeRandomLlama, type LlamaShape, type WeightType } from "../src/gguf/randomModel.ts";
import { checkConfig, findHaproxy, haproxyDir, startHaproxy, type Haproxy } from "../testing/haproxy.ts";
import { launchOptions, prepareLaunch, ROOT, type Launch } from "./snapshot.ts";
import { listeningUrl } from "./daemonProcess.ts";

const MODELS: Record<string, [LlamaShape, WeightType]> = {
  "small-q8": [SMALL_SHAPE, "Q8_0"],
  "small-f16": [SMALL_SHAPE, "F16"],
  "tinyllama-q8": [TINYLLAMA_SHAPE, "Q8_0"],
  "tinyllama-f16": [TINYLLAMA_SHAPE, "F16"],
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const freshPrompt = (n: number) => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join("");
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

interface Sample {
  status: number;
  ms: number;
  ttftMs: number | null;
  tokens: number;
}

/** One request; when `sse`, reads OpenAI's stream: the first chunk's time and the last chunk's usage. */
function send(url: string, method: string, path: string, body?: unknown): Promise<Sample> {
  const { hostname, port } = new URL(url);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ hostname, port, method, path, agent, headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {} }, (res) => {
      let text = "";
      let ttft: number | null = null;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        ttft ??= performance.now() - started;
        text += chunk;
      });
      res.on("end", () => {
        const usage = [...text.matchAll(/"completion_tokens":(\d+)/g)].at(-1);
        resolve({ status: res.statusCode ?? 0, ms: performance.now() - started, ttftMs: ttft, tokens: usage ? Number(usage[1]) : 0 });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

interface Daemon {
  url: string;
  agentPort: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function startDaemon(launch: Launch, modelsDir: string, threads: number, parallel: number): Promise<Daemon> {
  const agentPort = await freePort();
  const child = spawn(
    process.execPath,
    [...launch.argv.process, "serve", "--port", "0", "--threads", String(threads), "--gpu", "off", "--models-dir", modelsDir, "--parallel", String(parallel), "--max-queue", "64", "--agent-port", String(agentPort), "--spare-engine", "false", "--keep-alive=-1", "--log-format", "json"],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await listeningUrl(child, "a daemon exited before it listened");
  return {
    url,
    agentPort,
    child,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      if ((await Promise.race([exited, sleep(20_000).then(() => "late")])) === "late") child.kill("SIGKILL");
    },
  };
}

interface Run {
  label: string;
  daemons: number;
  proxy: boolean;
  clients: number;
  requests: number;
  errors: number;
  tokens_per_s: number;
  ttft_p50_ms: number;
  ttft_p99_ms: number;
  wall_s: number;
}

/** `clients` closed-loop clients, `total` streamed completions of `tokens` tokens, fresh prompts. */
async function load(label: string, url: string, daemons: number, proxy: boolean, clients: number, total: number, tokens: number): Promise<Run> {
  let next = 0;
  const samples: Sample[] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < total) {
        next++;
        samples.push(await send(url, "POST", "/v1/completions", { model: "bench", prompt: freshPrompt(24), max_tokens: tokens, temperature: 0, stream: true }));
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  const ok = samples.filter((s) => s.status === 200);
  const ttfts = ok.map((s) => s.ttftMs!).filter((x) => x !== null);
  return {
    label,
    daemons,
    proxy,
    clients,
    requests: samples.length,
    errors: samples.length - ok.length,
    tokens_per_s: round(ok.reduce((a, s) => a + s.tokens, 0) / wall, 1),
    ttft_p50_ms: round(pct(ttfts, 50), 1),
    ttft_p99_ms: round(pct(ttfts, 99), 1),
    wall_s: round(wall, 1),
  };
}

/**
 * Latency of `n` sequential requests to each of two addresses, taken in turns (a, b, a, b, ...) so that
 * whatever else this machine is doing weighs on both alike: median and p99 of each, in ms.
 */
async function latencyPair(n: number, a: () => Promise<Sample>, b: () => Promise<Sample>): Promise<{ a: { p50: number; p99: number }; b: { p50: number; p99: number } }> {
  const ms: [number[], number[]] = [[], []];
  for (let i = 0; i < n; i++) {
    for (const [k, f] of [a, b].entries()) {
      const s = await f();
      if (s.status !== 200) throw new Error(`status ${s.status}`);
      ms[k].push(s.ms);
    }
  }
  const stats = (xs: number[]) => ({ p50: round(pct(xs, 50), 3), p99: round(pct(xs, 99), 3) });
  return { a: stats(ms[0]), b: stats(ms[1]) };
}

export async function runFleetBench(args: readonly string[] = process.argv.slice(2)): Promise<void> {
  const opt = (name: string, fallback: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
  };
  const threads = Number(opt("threads", "1"));
  const clients = Number(opt("clients", "2"));
  const perDaemon = Number(opt("requests", "16"));
  const tokens = Number(opt("tokens", "32"));
  const haproxy = findHaproxy();
  if (haproxy.path === null) throw new Error(`the fleet bench needs HAProxy: ${haproxy.why}`);

  const modelName = opt("model", "small-q8");
  let model = modelName;
  if (modelName in MODELS) {
    const [shape, type] = MODELS[modelName];
    mkdirSync(join(ROOT, "bench", "models"), { recursive: true });
    model = join(ROOT, "bench", "models", `${shape.name}-${type.toLowerCase()}.gguf`);
    if (!existsSync(model)) {
      console.log(`writing ${model} ...`);
      await writeRandomLlama(model, shape, type, 42);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "kekahyde-fleet-bench-"));
  const launch = prepareLaunch(launchOptions(args));
  const daemons: Daemon[] = [];
  let proxy: Haproxy | null = null;
  try {
    for (let i = 0; i < 3; i++) {
      const models = join(dir, `d${i + 1}`);
      mkdirSync(models);
      try {
        linkSync(model, join(models, "bench.gguf"));
      } catch {
        copyFileSync(model, join(models, "bench.gguf"));
      }
      daemons.push(await startDaemon(launch, models, threads, clients));
    }
    for (const d of daemons) {
      const r = await send(d.url, "POST", "/load_model", { name: "bench" });
      if (r.status !== 200) throw new Error(`loading the model on ${d.url}: ${r.status}`);
    }
    console.log(`3 daemons (${launch.description}), ${threads} thread(s) and --parallel ${clients} each, model ${model}`);

    const startProxy = async (n: number) => {
      const port = await freePort();
      const where = await haproxyDir();
      const members = daemons.slice(0, n);
      const config = await fleetConfig({ listen: `127.0.0.1:${port}`, daemons: members.map((d) => d.url), agentPort: (u) => members.find((d) => d.url === u)!.agentPort, statsSocket: where.socket });
      const checked = await checkConfig(haproxy.path, config);
      if (!checked.ok) throw new Error(checked.output);
      const p = await startHaproxy(haproxy.path, config, where, `http://127.0.0.1:${port}`);
      const deadline = Date.now() + 15_000;
      while (!(await p.servers()).every((s) => s.status.startsWith("UP") || s.status === "no check")) {
        if (Date.now() > deadline) throw new Error("HAProxy's servers did not come up");
        await sleep(100);
      }
      await sleep(1_500); // one agent round, so that the weights are the daemons' own
      return p;
    };

    // 1. The proxy's own cost: the same sequential requests, straight and through HAProxy (one daemon), in turns.
    proxy = await startProxy(1);
    const d1 = daemons[0];
    const viaProxy = proxy.url;
    const oneToken = (url: string) => () => send(url, "POST", "/v1/completions", { model: "bench", prompt: freshPrompt(8), max_tokens: 1, temperature: 0 });
    await latencyPair(20, oneToken(d1.url), oneToken(viaProxy)); // warm both paths
    const health = await latencyPair(500, () => send(d1.url, "GET", "/health"), () => send(viaProxy, "GET", "/health"));
    const token = await latencyPair(100, oneToken(d1.url), oneToken(viaProxy));
    const overhead = { health_direct: health.a, health_proxied: health.b, one_token_direct: token.a, one_token_proxied: token.b };
    const added = { p50_ms: round(overhead.health_proxied.p50 - overhead.health_direct.p50, 3), p99_ms: round(overhead.health_proxied.p99 - overhead.health_direct.p99, 3), one_token_p50_ms: round(overhead.one_token_proxied.p50 - overhead.one_token_direct.p50, 3) };
    console.log(`proxy overhead per request: GET /health ${overhead.health_direct.p50} → ${overhead.health_proxied.p50} ms (p50), 1-token completion ${overhead.one_token_direct.p50} → ${overhead.one_token_proxied.p50} ms (p50)`);

    // 2. Throughput and time to first token: one daemon without the proxy and through it, in turns (rounds),
    // then 2 and 3 daemons behind it.
    const rounds = 3;
    const direct: Run[] = [];
    const proxied: Run[] = [];
    await load("warm-up", d1.url, 1, false, clients, clients * 2, tokens);
    for (let r = 0; r < rounds; r++) {
      direct.push(await load("1 daemon, no proxy", d1.url, 1, false, clients, perDaemon, tokens));
      proxied.push(await load("1 daemon via HAProxy", viaProxy, 1, true, clients, perDaemon, tokens));
    }
    const merge = (xs: Run[]): Run => ({
      ...xs[0],
      requests: xs.reduce((a, x) => a + x.requests, 0),
      errors: xs.reduce((a, x) => a + x.errors, 0),
      tokens_per_s: round(pct(xs.map((x) => x.tokens_per_s), 50), 1),
      ttft_p50_ms: round(pct(xs.map((x) => x.ttft_p50_ms), 50), 1),
      ttft_p99_ms: round(pct(xs.map((x) => x.ttft_p99_ms), 50), 1),
      wall_s: round(xs.reduce((a, x) => a + x.wall_s, 0), 1),
    });
    const runs: Run[] = [merge(direct), merge(proxied)];
    console.log(JSON.stringify(runs));
    for (const n of [2, 3]) {
      await proxy.stop();
      proxy = await startProxy(n);
      runs.push(await load(`${n} daemons via HAProxy`, proxy.url, n, true, clients * n, perDaemon * n, tokens));
      console.log(JSON.stringify(runs.at(-1)));
    }
    const single = runs[0];
    const paper = [1, 2, 3, 4, 8].map((n) => ({
      machines: n,
      tokens_per_s: round(single.tokens_per_s * n, 1),
      ttft_p99_ms: round(single.ttft_p99_ms + Math.max(0, added.p99_ms), 1),
    }));

    const date = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    const machine = { cpu: cpus()[0]?.model ?? "unknown", logical_cpus: availableParallelism(), memory_gib: round(totalmem() / 1024 ** 3, 1), node: process.version, haproxy: haproxy.path };
    const result = { date, machine, daemon: launch.description, model, threads, clients_per_daemon: clients, requests_per_daemon: perDaemon, tokens, overhead, added, runs, paper };
    const md = [
      `# Fleet benchmark (${date})`,
      "",
      `\`npm run bench -- --only fleet ${args.filter((a) => a !== "--only" && a !== "fleet").join(" ")}\` on ${machine.cpu}, ${machine.logical_cpus} logical CPUs. ` +
        `Daemons: ${launch.description}; ${threads} thread(s), --parallel ${clients} each; model ${model.replace(ROOT + "/", "")}; ${tokens} tokens a request, streamed (/v1/completions).`,
      "",
      `One daemon with and without the proxy: ${rounds} rounds each, in turns, medians of the rounds' figures.`,
      "",
      "| configuration | clients | requests | errors | tokens/s (total) | TTFT p50 ms | TTFT p99 ms |",
      "| --- | --- | --- | --- | --- | --- | --- |",
      ...runs.map((r) => `| ${r.label} | ${r.clients} | ${r.requests} | ${r.errors} | ${r.tokens_per_s} | ${r.ttft_p50_ms} | ${r.ttft_p99_ms} |`),
      "",
      `HAProxy's own cost per request (sequential, one daemon, straight and through the proxy in turns): GET /health ${overhead.health_direct.p50} ms straight, ${overhead.health_proxied.p50} ms through it (p50; p99 ${overhead.health_direct.p99} → ${overhead.health_proxied.p99}); ` +
        `a 1-token completion ${overhead.one_token_direct.p50} → ${overhead.one_token_proxied.p50} ms (p50).`,
      "",
      "The daemons above share this machine's cores: 2 and 3 daemons measure contention, not scaling. On N machines (on paper: one daemon's own figures times N, plus the proxy's cost per request; not measured):",
      "",
      "| machines | tokens/s (total) | TTFT p99 ms |",
      "| --- | --- | --- |",
      ...paper.map((p) => `| ${p.machines} | ${p.tokens_per_s} | ${p.ttft_p99_ms} |`),
      "",
    ].join("\n");
    mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
    writeFileSync(join(ROOT, "bench", "results", `fleet-${date}.json`), JSON.stringify(result, null, 2));
    writeFileSync(join(ROOT, "bench", "results", `fleet-${date}.md`), md);
    console.log(`\n${md}\n(bench/results/fleet-${date}.json and .md)`);
  } finally {
    await proxy?.stop().catch(() => {});
    await Promise.all(daemons.map((d) => d.stop()));
    launch.cleanup();
    rmSync(dir, { recursive: true, force: true });
    agent.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runFleetBench().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
