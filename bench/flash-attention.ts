// `npx tsx bench/flash-attention.ts [--rounds N] [model.gguf ...]`
//
// Generation speed of the in-process binding with llama.cpp's flash attention off (node-llama-cpp's default)
// and "auto" (llama.cpp's own default, and llama-server's and llama-bench's; the daemon's since
// `--flash-attention`), on the same model, one context each, the two taking turns within every round; the
// ratio is the median of the rounds' ratios. 64 greedy tokens after a short prompt, 1 thread, context 2048
// (the daemon's default). Without arguments: the bench's generated models that are present in bench/models/.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { greedyTokensPerSecond } from "./greedyLoop.ts";

const args = process.argv.slice(2);
const roundsAt = args.indexOf("--rounds");
const ROUNDS = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 7;
const given = args.filter((a, i) => !a.startsWith("--") && args[i - 1] !== "--rounds");
const models = given.length
  ? given
  : ["llama-110m-shape-q8_0.gguf", "tinyllama-1.1b-shape-q8_0.gguf"].map((f) => join("bench", "models", f)).filter(existsSync);
if (models.length === 0) throw new Error("no model: run `npm run bench` once (it generates bench/models/), or name a GGUF file");
const TOKENS = 64;

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`| model | flash attention off, tokens/s | auto, tokens/s | auto / off (median of ${ROUNDS} rounds' ratios) |`);
console.log("| --- | --- | --- | --- |");
for (const path of models) {
  const model = await llama.loadModel({ modelPath: path });
  const sequenceWith = async (flashAttention: boolean | "auto") =>
    (await model.createContext({ contextSize: 2048, threads: { ideal: 1, min: 1 }, flashAttention })).getSequence();
  const off = await sequenceWith(false);
  const auto = await sequenceWith("auto");
  const prompt = model.tokenize("Once upon a time there was a little");
  await greedyTokensPerSecond(off, prompt, TOKENS); // warm-up
  await greedyTokensPerSecond(auto, prompt, TOKENS);
  const runs = { off: [] as number[], auto: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? (["auto", "off"] as const) : (["off", "auto"] as const);
    for (const which of order) runs[which].push(await greedyTokensPerSecond(which === "off" ? off : auto, prompt, TOKENS));
  }
  const ratio = median(runs.auto.map((x, i) => x / runs.off[i]));
  console.log(`| ${path} | ${median(runs.off).toFixed(1)} | ${median(runs.auto).toFixed(1)} | ${ratio.toFixed(3)}× |`);
  await model.dispose();
}
await llama.dispose();
