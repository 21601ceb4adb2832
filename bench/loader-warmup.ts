// `npx tsx bench/loader-warmup.ts [--rounds N] [--model PATH] [--tokens N]`: what a fresh engine process pays for V8 compiling
// node-llama-cpp's JavaScript GGUF parser on its first model. Every engine process loads one model, so every
// load runs that parser cold. Each round starts two fresh processes, taking turns: one loads the model
// straight away; the other first parses a synthetic header-only GGUF (no tensors, a vocabulary of --tokens
// entries, 8000 by default), as a spare engine process does while it waits, then loads the same model. Printed: the
// warm-up's own time and the model's loadModel / createContext / first token, in ms.
import { execFileSync } from "node:child_process";

const argv = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};

if (argv[0] === "--child") {
  const [, model, tokens] = argv;
  const { getLlama, LlamaCompletion, readGgufFileInfo } = await import("node-llama-cpp");
  const { warmUpGgufParser } = await import("../src/engine/loaderWarmUp.ts");
  const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false });
  let warmUp = 0;
  if (Number(tokens) > 0) {
    const started = performance.now();
    // What the spare engine process does while it waits (src/engine/loaderWarmUp.ts).
    await warmUpGgufParser((path, signal) => readGgufFileInfo(path, { sourceType: "filesystem", signal }), new AbortController().signal, Number(tokens));
    warmUp = performance.now() - started;
  }
  const t0 = performance.now();
  const m = await llama.loadModel({ modelPath: model });
  const t1 = performance.now();
  const ctx = await m.createContext({ contextSize: 2048, threads: 1, flashAttention: "auto" });
  const t2 = performance.now();
  await new LlamaCompletion({ contextSequence: ctx.getSequence() }).generateCompletion("a", { maxTokens: 1, temperature: 0 });
  const t3 = performance.now();
  console.log(JSON.stringify({ warmUp, load: t1 - t0, context: t2 - t1, firstToken: t3 - t2 }));
  process.exit(0);
}

const ROUNDS = Number(opt("rounds", "5"));
const MODEL = opt("model", "bench/models/llama-110m-shape-q8_0.gguf");
const TOKENS = opt("tokens", "8000");
type Run = { warmUp: number; load: number; context: number; firstToken: number };
const child = (tokens: string): Run => {
  const out = execFileSync(process.execPath, ["--import", "tsx", new URL(import.meta.url).pathname, "--child", MODEL, tokens], { encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").at(-1)!) as Run;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cold: Run[] = [];
const warm: Run[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? ["0", TOKENS] : [TOKENS, "0"];
  for (const tokens of order) (tokens === "0" ? cold : warm).push(child(tokens));
  const [c, w] = [cold.at(-1)!, warm.at(-1)!];
  console.log(`round ${r + 1}: cold ${c.load.toFixed(0)}/${c.context.toFixed(0)}/${c.firstToken.toFixed(0)}; after a ${TOKENS}-token header (${w.warmUp.toFixed(0)} ms) ${w.load.toFixed(0)}/${w.context.toFixed(0)}/${w.firstToken.toFixed(0)}`);
}
const total = (x: Run) => x.load + x.context + x.firstToken;
console.log(
  `median load: cold ${median(cold.map((x) => x.load)).toFixed(0)} ms, warmed ${median(warm.map((x) => x.load)).toFixed(0)} ms; ` +
    `load + context + first token: ${median(cold.map(total)).toFixed(0)} against ${median(warm.map(total)).toFixed(0)} ms; warm-up ${median(warm.map((x) => x.warmUp)).toFixed(0)} ms`,
);
