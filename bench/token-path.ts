// `npx tsx bench/token-path.ts [--rounds N] [model.gguf ...]`
//
// Where a generated token's time goes, in one process on one model, three contenders taking turns each round:
// - "public loop": node-llama-cpp's `evaluateWithMetadata` one token at a time (what src/engine/tokenLoop.ts
//   runs), greedy;
// - "direct loop": the same decode and sampling called on node-llama-cpp's addon context directly
//   (`_ctx.initBatch/addToBatch/decodeBatch/sampleToken`, internals of 3.21.1): what is left without
//   node-llama-cpp's batching queue, locks and generator around each token;
// - llama-bench tg (the peer, `npm run bench:peers`), which decodes without sampling.
// 64 tokens after a short prompt, 1 thread, context 2048, flash attention auto (the daemon's settings).
// Medians of the rounds' ratios. Whichever binary node-llama-cpp loads (prebuilt, or `npm run build:engine`'s
// localBuild) is named in the output.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, type LlamaContext, type LlamaContextSequence, type LlamaModel, type Token } from "node-llama-cpp";
import { greedyTokensPerSecond } from "./greedyLoop.ts";
import { PEER_BIN, peersAvailable } from "./peers.ts";

const args = process.argv.slice(2);
const roundsAt = args.indexOf("--rounds");
const ROUNDS = roundsAt >= 0 ? Number(args[roundsAt + 1]) : 7;
const given = args.filter((a, i) => !a.startsWith("--") && args[i - 1] !== "--rounds");
const models = given.length ? given : [join("bench", "models", "llama-110m-shape-q8_0.gguf")].filter(existsSync);
if (models.length === 0) throw new Error("no model: run `npm run bench` once (it generates bench/models/), or name a GGUF file");
const TOKENS = 64;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The internals the direct loop calls (node-llama-cpp 3.21.1). */
interface AddonContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenIndex: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(batchLogitIndex: number, sampler: unknown): Promise<Token>;
  removeTokenCellsFromSequence(sequenceId: number, start: number, end: number): boolean;
}
interface AddonSampler {
  applyConfig(config: Record<string, unknown>): void;
  dispose(): void;
}

const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, logLevel: LlamaLogLevel.error, maxThreads: 1 });

async function directLoop(model: LlamaModel, context: LlamaContext, sequence: LlamaContextSequence, prompt: Token[]): Promise<number> {
  await sequence.clearHistory();
  const ctx = (context as unknown as { _ctx: AddonContext })._ctx;
  const id = (sequence as unknown as { _sequenceId: number })._sequenceId;
  const Sampler = (llama as unknown as { _bindings: { AddonSampler: new (model: unknown) => AddonSampler } })._bindings.AddonSampler;
  const sampler = new Sampler((model as unknown as { _model: unknown })._model);
  // node-llama-cpp's own resolved config for a greedy request (_resolveSamplerConfig's defaults).
  sampler.applyConfig({ temperature: 0, minP: 0, topK: 40, topP: 0.95, seed: 0, repeatPenaltyMaxTokens: 64, dryRepeatPenaltyBase: 1.75, dryRepeatPenaltyAllowedLength: 2, dryRepeatPenaltyLastTokens: -1 });
  try {
    ctx.initBatch(prompt.length);
    let logits = ctx.addToBatch(id, 0, Uint32Array.from(prompt), Uint32Array.of(prompt.length - 1));
    await ctx.decodeBatch();
    let token = await ctx.sampleToken(logits[0], sampler);
    const start = performance.now();
    for (let i = 0; i < TOKENS; i++) {
      ctx.initBatch(1);
      logits = ctx.addToBatch(id, prompt.length + i, Uint32Array.of(token), Uint32Array.of(0));
      await ctx.decodeBatch();
      token = await ctx.sampleToken(logits[0], sampler);
    }
    return TOKENS / ((performance.now() - start) / 1000);
  } finally {
    // The sequence's own bookkeeping never saw these tokens: free their cells.
    ctx.removeTokenCellsFromSequence(id, 0, prompt.length + TOKENS + 1);
    sampler.dispose();
  }
}

const llamaBench = (path: string) =>
  (JSON.parse(execFileSync(join(PEER_BIN, "llama-bench"), ["-m", path, "-t", "1", "-p", "0", "-n", String(TOKENS), "-r", "1", "-o", "json"], { encoding: "utf8" })) as Array<{ avg_ts: number }>)[0].avg_ts;

const peers = peersAvailable();
console.log(`node-llama-cpp binary: ${llama.buildType}; ${ROUNDS} rounds, contenders taking turns; tokens/s, medians; ratios: medians of the rounds' ratios`);
console.log("| model | public loop | direct loop | llama-bench tg64 | public / direct | public / llama-bench | direct / llama-bench |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const path of models) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({ contextSize: 2048, threads: { ideal: 1, min: 1 }, flashAttention: "auto" });
  const sequence = context.getSequence();
  const prompt = model.tokenize("Once upon a time there was a little");
  await greedyTokensPerSecond(sequence, prompt, TOKENS); // warm-up
  await directLoop(model, context, sequence, prompt);
  const runs = { pub: [] as number[], dir: [] as number[], lb: [] as number[] };
  const contenders = [
    async () => runs.pub.push(await greedyTokensPerSecond(sequence, prompt, TOKENS)),
    async () => runs.dir.push(await directLoop(model, context, sequence, prompt)),
    ...(peers ? [() => Promise.resolve(runs.lb.push(llamaBench(path)))] : []),
  ];
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < contenders.length; i++) await contenders[(i + round) % contenders.length]();
  }
  const ratio = (a: number[], b: number[]) => (b.length ? `${median(a.map((x, i) => x / b[i])).toFixed(3)}×` : "–");
  console.log(`| ${path} | ${median(runs.pub).toFixed(1)} | ${median(runs.dir).toFixed(1)} | ${runs.lb.length ? median(runs.lb).toFixed(1) : "–"} | ${ratio(runs.pub, runs.dir)} | ${ratio(runs.pub, runs.lb)} | ${ratio(runs.dir, runs.lb)} |`);
  await context.dispose();
  await model.dispose();
}
await llama.dispose();
