// `npx tsx bench/ab-load.ts --patch FILE [--model small-q8|PATH] [--rounds N]`: load time of the daemon as it is
// against the daemon with FILE applied (both compiled snapshots, bench/snapshot.ts), side by side, taking turns:
// each round loads the model once on each (its spare engine process settled first), then unloads it. For a change
// to how engine processes start; not a test.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { prepareLaunch, ROOT } from "./snapshot.ts";
import { childrenOf, listeningUrl } from "./daemonProcess.ts";

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : fallback;
};
const patch = opt("patch", "");
if (!patch) throw new Error("--patch FILE is required");
const modelArg = opt("model", "small-q8");
const model = modelArg === "small-q8" ? join(ROOT, "bench", "models", "llama-110m-shape-q8_0.gguf") : modelArg === "tinyllama-q8" ? join(ROOT, "bench", "models", "tinyllama-1.1b-shape-q8_0.gguf") : modelArg;
const ROUNDS = Number(opt("rounds", "6"));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssKb = (pid: number) => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return -1;
  }
};
/** `n` engine processes, none starting (no child of its own), RSS steady for a second. */
async function settled(pid: number, n: number): Promise<void> {
  let last = "";
  let steady = 0;
  for (;;) {
    const kids = childrenOf(pid);
    const key = kids.map((p) => `${p}:${Math.round(rssKb(p) / 1000)}`).join(",");
    steady = kids.length === n && kids.every((p) => childrenOf(p).length === 0) && key === last ? steady + 1 : 0;
    last = key;
    if (steady >= 5) return;
    await sleep(200);
  }
}

const variants = { current: prepareLaunch({ source: false, patches: [] }), patched: prepareLaunch({ source: false, patches: [patch] }) };
const daemons: Record<string, { url: string; pid: number }> = {};
for (const [name, launch] of Object.entries(variants)) {
  const child = spawn(process.execPath, [...launch.argv.process, "serve", "--port", "0", "--threads", "1", "--gpu", "off", "--log-format", "json"], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  const url = await listeningUrl(child, `${name} exited`);
  daemons[name] = { url, pid: child.pid! };
}
const times: Record<string, number[]> = { current: [], patched: [] };
try {
  for (const d of Object.values(daemons)) await settled(d.pid, 1);
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 ? ["patched", "current"] : ["current", "patched"]) {
      const d = daemons[name];
      await settled(d.pid, 1);
      const t = performance.now();
      const res = await fetch(`${d.url}/load_model`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ path: model }) });
      if (res.status !== 200) throw new Error(`${name}: load_model answered ${res.status}: ${await res.text()}`);
      times[name].push(Math.round(performance.now() - t));
      await settled(d.pid, 2);
      await fetch(`${d.url}/unload_model`, { method: "POST" });
    }
    console.log(`round ${r + 1}: current ${times.current.at(-1)} ms, patched ${times.patched.at(-1)} ms`);
  }
} finally {
  for (const d of Object.values(daemons)) process.kill(d.pid, "SIGTERM");
  await sleep(2000);
  for (const l of Object.values(variants)) l.cleanup();
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratios = times.current.map((c, i) => times.patched[i] / c);
console.log(
  JSON.stringify({ model: modelArg, patch, daemon: variants.current.description, rounds: ROUNDS, current_ms: times.current, patched_ms: times.patched, median_current_ms: median(times.current), median_patched_ms: median(times.patched), median_ratio: Math.round(median(ratios) * 100) / 100 }),
);
