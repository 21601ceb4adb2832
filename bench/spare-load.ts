// `npx tsx bench/spare-load.ts --against DIR [--rounds N] [--model PATH] [--wait MS]`: a model load into a spare
// engine process that has been waiting (the daemon listening for --wait ms, 3000 by default; 0: a daemon's first
// load, asked for as soon as it listens), this checkout's daemon against another
// checkout's (DIR, e.g. `git worktree add DIR <commit>` with node_modules linked), fresh daemons taking turns.
// Prints each round and the median of the per-round ratios.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnDaemon } from "../test/helpers/daemonProcess.ts";

const argv = process.argv.slice(2);
const opt = (name: string, fallback?: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};
const against = opt("against");
if (!against) throw new Error("--against DIR: the other checkout to compare with");
const ROUNDS = Number(opt("rounds", "5"));
const WAIT_MS = Number(opt("wait", "3000"));
const MODEL = resolve(opt("model", "bench/models/llama-110m-shape-q8_0.gguf")!);
const clis = { this: fileURLToPath(new URL("../src/cli.ts", import.meta.url)), other: resolve(against, "src/cli.ts") };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const times: Record<keyof typeof clis, number[]> = { this: [], other: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const which of round % 2 ? (["other", "this"] as const) : (["this", "other"] as const)) {
    const daemon = await spawnDaemon(["--threads", "1"], { entry: ["--import", "tsx", clis[which]] });
    try {
      await sleep(WAIT_MS);
      const started = performance.now();
      const loaded = await daemon.post("/load_model", { path: MODEL });
      if (loaded.status !== 200) throw new Error(`${which}: load_model answered ${loaded.status}: ${await loaded.text()}`);
      times[which].push(performance.now() - started);
    } finally {
      daemon.child.kill("SIGTERM");
      await daemon.exited;
    }
  }
  console.log(`round ${round + 1}: this ${times.this.at(-1)!.toFixed(0)} ms, other ${times.other.at(-1)!.toFixed(0)} ms`);
}
console.log(
  `median load ${WAIT_MS} ms after the daemon listened: this ${median(times.this).toFixed(0)} ms, other ${median(times.other).toFixed(0)} ms; ` +
    `median of per-round ratios ${median(times.this.map((t, i) => t / times.other[i])).toFixed(2)}x`,
);
process.exit(0);
