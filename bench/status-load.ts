// `npx tsx bench/status-load.ts [--rounds N] [--nice N] [--cpu-prof DIR] [--model PATH]`: what one /status
// costs the daemon while a generation runs, under the load of section 3 of `npm run bench` (8 clients asking
// as fast as they get answers, 3 s or 1500 requests a round): latency percentiles, and the daemon's and the
// engine process's CPU from /proc. `--nice N` lowers the priority of every thread of the engine process
// (niceness is per thread on Linux: the decode runs on a libuv worker, not the main thread) to see what the
// daemon gains when the generation yields the CPU to it. `--cpu-prof DIR` starts the daemon under
// `node --cpu-prof` (a profile per process in DIR, written when it exits).
import { readdirSync, readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { setPriority } from "node:os";
import { fileURLToPath } from "node:url";
import { engineProcessesOf, spawnDaemon } from "../testing/daemonProcess.ts";

const argv = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};
const ROUNDS = Number(opt("rounds", "5"));
const NICE = argv.includes("--nice") ? Number(opt("nice", "10")) : null;
const PROFILE_DIR = argv.includes("--cpu-prof") ? opt("cpu-prof", "bench/results/profiles") : null;
const MODEL = opt("model", "bench/models/llama-110m-shape-q8_0.gguf");
const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

const agent = new Agent({ keepAlive: true, maxSockets: 64 });
function http(url: string, method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<number> {
  const { hostname, port } = new URL(url);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ hostname, port, method, path, agent, signal, headers: payload ? { "content-type": "application/json" } : {} }, (res) => {
      res.resume();
      res.on("end", () => resolve(performance.now() - started));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** CPU time of a process so far (user + system, all threads), ms. */
const cpuMs = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const entry = ["--import", "tsx", CLI];
if (PROFILE_DIR) entry.unshift("--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`);
const daemon = await spawnDaemon(["--threads", "1", "--spare-engine", "false"], { entry });
try {
  const loaded = await daemon.post("/load_model", { path: MODEL });
  if (loaded.status !== 200) throw new Error(`load_model answered ${loaded.status}: ${await loaded.text()}`);
  const engine = engineProcessesOf(daemon.child.pid!)[0];
  console.log(`daemon ${daemon.child.pid}, engine ${engine}${NICE === null ? "" : `, engine threads at nice ${NICE}`}`);
  for (let round = 1; round <= ROUNDS; round++) {
    const stop = new AbortController();
    const generation = http(daemon.url, "POST", "/run_prompt", { prompt: "hello there", raw: true, max_tokens: 100_000, temperature: 0 }, stop.signal).catch(() => null);
    await sleep(300);
    // Threads the engine started for this generation count too.
    if (NICE !== null) for (const thread of readdirSync(`/proc/${engine}/task`)) setPriority(Number(thread), NICE);
    const latencies: number[] = [];
    let sent = 0;
    const [daemonBefore, engineBefore, started] = [cpuMs(daemon.child.pid!), cpuMs(engine), performance.now()];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (sent < 1500 && performance.now() < started + 3_000) {
          sent++;
          latencies.push(await http(daemon.url, "GET", "/status"));
        }
      }),
    );
    const wall = performance.now() - started;
    const [daemonCpu, engineCpu] = [cpuMs(daemon.child.pid!) - daemonBefore, cpuMs(engine) - engineBefore];
    stop.abort();
    await generation;
    await sleep(300);
    console.log(
      `round ${round}: ${latencies.length} requests, p50 ${pct(latencies, 50).toFixed(2)} ms, p99 ${pct(latencies, 99).toFixed(2)} ms; ` +
        `daemon CPU ${(daemonCpu / latencies.length).toFixed(3)} ms a request (${Math.round((100 * daemonCpu) / wall)}% of a core), engine ${Math.round((100 * engineCpu) / wall)}%`,
    );
  }
} finally {
  daemon.child.kill("SIGTERM");
  await daemon.exited;
}
process.exit(0);
