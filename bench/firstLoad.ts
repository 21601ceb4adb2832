// The first-load section of `npm run bench` (`--only first-load`): start to first token of a fresh daemon, part
// by part, beside llama-server's start to healthy plus its first request, in the same run, taking turns.
//
// Kekahyde: the daemon is spawned, and as soon as it says it is listening the bench sends POST /load_model
// (which waits for the engine process the daemon started at once), then a 1-token streamed /run_prompt. While
// that happens the bench watches /proc every few ms: when the engine process appears, when node-llama-cpp's
// binary test runs in a subprocess of it (testBindingBinary.js), and when the binding (llama-addon.node) is
// mapped into the engine process. Twice each round: as it runs now (a passed binary test remembered,
// src/engine/binaryCheck.ts) and with KEKAHYDE_BINARY_CHECK=always (the test on every start, as before).
// llama-server: spawned, /health polled every 10 ms until 200, then the same prompt, n_predict 1, streamed.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { childrenOf, listeningUrl } from "./daemonProcess.ts";

export interface FirstLoadDeps {
  model: string;
  threads: number;
  gpu: string;
  reps: number;
  /** Node's arguments before `serve` for the daemon as shipped. */
  daemonArgv: string[];
  /** Folder of llama-server, or null without the peers. */
  peerBin: string | null;
  /** Extra arguments for llama-server (every layer on the GPU in a GPU run). */
  peerArgs: string[];
  cwd: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const prompt64 = () => Array.from({ length: 63 }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join("");

function post(url: string, path: string, body: unknown, stream = false): Promise<{ status: number; first: number; end: number; text: string }> {
  const { hostname, port } = new URL(url);
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    let first = NaN;
    let text = "";
    const req = request({ hostname, port, method: "POST", path, agent: false, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), ...(stream ? { accept: "text/event-stream" } : {}) } }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        if (Number.isNaN(first) && /^data: /m.test(text + c)) first = performance.now();
        text += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, first, end: performance.now(), text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(120_000, () => req.destroy(new Error(`${path}: no answer for 120 s`)));
    req.end(payload);
  });
}

function get(url: string, path: string): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const req = request({ hostname, port, path, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
};
const mapsBinding = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/maps`, "utf8").includes("llama-addon");
  } catch {
    return false;
  }
};

interface KekahydeStart {
  listening: number;
  engine_spawned: number;
  binary_test_start: number | null;
  binary_test_end: number | null;
  binding_loaded: number;
  load_answered: number;
  first_token: number;
}

/** One fresh daemon, start to first token; every time in ms from the spawn. */
async function kekahydeStart(deps: FirstLoadDeps, testEveryStart: boolean): Promise<KekahydeStart> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [...deps.daemonArgv, "serve", "--port", "0", "--threads", String(deps.threads), "--gpu", deps.gpu, "--log-format", "json"], {
    cwd: deps.cwd,
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...(testEveryStart ? { KEKAHYDE_BINARY_CHECK: "always" } : {}) },
  });
  const seen: Partial<Record<keyof KekahydeStart, number>> = {};
  let watching = true;
  // /proc, every 5 ms, until the load is answered.
  const watch = (async () => {
    let engine: number | null = null;
    let test: number | null = null;
    while (watching) {
      const now = performance.now() - t0;
      if (engine === null) {
        const kids = childrenOf(child.pid!);
        if (kids.length) [engine, seen.engine_spawned] = [kids[0], now];
      }
      if (engine !== null) {
        if (test === null && seen.binary_test_start === undefined) {
          const t = childrenOf(engine).find((p) => cmdline(p).includes("testBindingBinary"));
          if (t !== undefined) [test, seen.binary_test_start] = [t, now];
        } else if (test !== null && !childrenOf(engine).includes(test)) {
          [test, seen.binary_test_end] = [null, now];
        }
        if (seen.binding_loaded === undefined && mapsBinding(engine)) seen.binding_loaded = now;
      }
      await sleep(5);
    }
  })();
  try {
    const url = await listeningUrl(child, "kekahyde exited");
    seen.listening = performance.now() - t0;
    const load = await post(url, "/load_model", { path: deps.model });
    if (load.status !== 200) throw new Error(`load_model answered ${load.status}: ${load.text.slice(0, 300)}`);
    seen.load_answered = load.end - t0;
    watching = false;
    await watch;
    const gen = await post(url, "/run_prompt", { prompt: prompt64(), raw: true, max_tokens: 1, temperature: 0 }, true);
    if (gen.status !== 200) throw new Error(`run_prompt answered ${gen.status}`);
    seen.first_token = gen.first - t0;
  } finally {
    watching = false;
    const exited = new Promise((r) => child.once("exit", r));
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(20_000).then(() => child.kill("SIGKILL"))]);
    }
  }
  return { binary_test_start: null, binary_test_end: null, ...seen } as KekahydeStart;
}

interface ServerStart {
  healthy: number;
  first_token: number;
}

async function llamaServerStart(deps: FirstLoadDeps): Promise<ServerStart> {
  const port = 39000 + Math.floor(Math.random() * 1000);
  const url = `http://127.0.0.1:${port}`;
  const t0 = performance.now();
  const child = spawn(join(deps.peerBin!, "llama-server"), ["-m", deps.model, "--host", "127.0.0.1", "--port", String(port), "-t", String(deps.threads), "-c", "2048", "-np", "1", ...deps.peerArgs, "--log-disable"], { stdio: "ignore" });
  try {
    while ((await get(url, "/health")) !== 200) {
      if (performance.now() - t0 > 120_000) throw new Error("llama-server did not become healthy");
      await sleep(10);
    }
    const healthy = performance.now() - t0;
    const gen = await post(url, "/completion", { prompt: prompt64(), n_predict: 1, temperature: 0, cache_prompt: false, stream: true }, true);
    return { healthy, first_token: gen.first - t0 };
  } finally {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await Promise.race([exited, sleep(10_000).then(() => child.kill("SIGKILL"))]);
  }
}

type Contender = "remembered" | "every_start" | "llama_server";

export async function firstLoadBench(deps: FirstLoadDeps): Promise<{ results: unknown; md: string[] }> {
  // One start first, not measured: it puts the files in the page cache and records a passed binary test.
  await kekahydeStart(deps, false);
  const order: Contender[] = deps.peerBin ? ["remembered", "every_start", "llama_server"] : ["remembered", "every_start"];
  const rounds: Array<{ remembered: KekahydeStart; every_start: KekahydeStart; llama_server: ServerStart | null }> = [];
  for (let r = 0; r < deps.reps; r++) {
    const turn = [...order.slice(r % order.length), ...order.slice(0, r % order.length)];
    const got: Partial<(typeof rounds)[number]> = { llama_server: null };
    for (const c of turn) {
      if (c === "llama_server") got.llama_server = await llamaServerStart(deps);
      else got[c] = await kekahydeStart(deps, c === "every_start");
      await sleep(300);
    }
    rounds.push(got as (typeof rounds)[number]);
    const k = got.remembered!;
    const e = got.every_start!;
    console.log(`   round ${r + 1}: first token ${Math.round(k.first_token)} ms (binary test every start: ${Math.round(e.first_token)} ms), llama-server ${got.llama_server ? Math.round(got.llama_server.first_token) : "n/a"} ms`);
  }
  const m = (f: (x: (typeof rounds)[number]) => number | null | undefined) => median(rounds.map((x) => f(x) ?? NaN));
  const parts = (c: "remembered" | "every_start") => ({
    daemon_start: m((x) => x[c].listening),
    engine_spawned: m((x) => x[c].engine_spawned),
    binary_test: m((x) => (x[c].binary_test_start === null ? 0 : (x[c].binary_test_end ?? NaN) - x[c].binary_test_start)),
    engine_spawn_to_binding: m((x) => x[c].binding_loaded - x[c].engine_spawned),
    binding_to_load_answered: m((x) => x[c].load_answered - x[c].binding_loaded),
    listening_to_load_answered: m((x) => x[c].load_answered - x[c].listening),
    load_answered_to_first_token: m((x) => x[c].first_token - x[c].load_answered),
    first_token: m((x) => x[c].first_token),
  });
  const results = {
    rounds,
    remembered: parts("remembered"),
    every_start: parts("every_start"),
    llama_server: deps.peerBin ? { healthy: m((x) => x.llama_server?.healthy), healthy_to_first_token: m((x) => x.llama_server && x.llama_server.first_token - x.llama_server.healthy), first_token: m((x) => x.llama_server?.first_token) } : null,
    ratios: {
      vs_llama_server: deps.peerBin ? m((x) => x.llama_server && x.remembered.first_token / x.llama_server.first_token) : null,
      every_start_vs_llama_server: deps.peerBin ? m((x) => x.llama_server && x.every_start.first_token / x.llama_server.first_token) : null,
      remembered_vs_every_start: m((x) => x.remembered.first_token / x.every_start.first_token),
    },
  };
  const ms = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? "n/a" : String(Math.round(x)));
  const rr = results.remembered;
  const ee = results.every_start;
  const ss = results.llama_server;
  const md = [
    `## 10. First load: start to first token of a fresh daemon (ms from the spawn; median of ${deps.reps} rounds taking turns, ratios are medians of each round's ratio)`,
    "",
    "Kekahyde: spawned, POST /load_model as soon as it listens (it waits for the engine process the daemon starts at once), then a 1-token streamed /run_prompt of 64 tokens. The parts come from /proc, watched every 5 ms: the engine process appearing, node-llama-cpp's binary test subprocess, llama-addon.node mapped into the engine process. \"Binary test remembered\" is the daemon as it runs now (a passed test of the same binary file is remembered, `src/engine/binaryCheck.ts`); \"every start\" sets KEKAHYDE_BINARY_CHECK=always, as every start was before. llama-server: spawned, /health polled every 10 ms, then the same prompt, n_predict 1, streamed.",
    "",
    "| | Kekahyde, binary test remembered | Kekahyde, binary test every start | llama-server |",
    "| --- | --- | --- | --- |",
    `| spawn → listening (daemon start) / healthy | ${ms(rr.daemon_start)} | ${ms(ee.daemon_start)} | ${ms(ss?.healthy)} |`,
    `| spawn → engine process started | ${ms(rr.engine_spawned)} | ${ms(ee.engine_spawned)} | |`,
    `| engine process started → binding loaded (Node, node-llama-cpp's import, the binary test) | ${ms(rr.engine_spawn_to_binding)} | ${ms(ee.engine_spawn_to_binding)} | |`,
    `| of which the binary test subprocess | ${ms(rr.binary_test)} | ${ms(ee.binary_test)} | |`,
    `| binding loaded → load answered (backend init, model load, context, warm-up, IPC) | ${ms(rr.binding_to_load_answered)} | ${ms(ee.binding_to_load_answered)} | |`,
    `| listening → load answered | ${ms(rr.listening_to_load_answered)} | ${ms(ee.listening_to_load_answered)} | |`,
    `| load answered / healthy → first token | ${ms(rr.load_answered_to_first_token)} | ${ms(ee.load_answered_to_first_token)} | ${ms(ss?.healthy_to_first_token)} |`,
    `| **spawn → first token** | **${ms(rr.first_token)}** | ${ms(ee.first_token)} | **${ms(ss?.first_token)}** |`,
    `| Kekahyde / llama-server | ${results.ratios.vs_llama_server === null ? "n/a" : `${results.ratios.vs_llama_server.toFixed(2)}×`} | ${results.ratios.every_start_vs_llama_server === null ? "n/a" : `${results.ratios.every_start_vs_llama_server.toFixed(2)}×`} | |`,
    "",
    `Target: spawn → first token ≤ 1.5× llama-server's: ${results.ratios.vs_llama_server === null ? "n/a" : `${results.ratios.vs_llama_server.toFixed(2)}×, ${results.ratios.vs_llama_server <= 1.5 ? "holds" : "does not hold"}`}. Remembering the binary test: ${results.ratios.remembered_vs_every_start.toFixed(2)}× the start to first token of testing on every start.`,
    "",
  ];
  return { results, md };
}
