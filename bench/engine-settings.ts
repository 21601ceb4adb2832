// Measures generation speed of the in-process binding for thread counts and context sizes, on a model the
// project writes itself. Not a test. Usage: npx tsx bench/engine-settings.ts [model.gguf]
// Without an argument it uses the slow char model (208 MB, F16) from test/.fixtures.
import { availableParallelism } from "node:os";
import { getLlama, LlamaCompletion, LlamaLogLevel } from "node-llama-cpp";
import { SLOW_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { fixtureModel } from "../testing/fixtures.ts";

const path = process.argv[2] ?? (await fixtureModel(SLOW_CHAR_MODEL));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 0 });
const model = await llama.loadModel({ modelPath: path });
const TOKENS = 128;
const REPEATS = 3;

async function msPerToken(threads: number, contextSize: number): Promise<number> {
  const context = await model.createContext({ contextSize, threads: { ideal: threads, min: threads } });
  const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
  await completion.generateCompletion("warm up", { maxTokens: 8 });
  const runs: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const t = performance.now();
    const text = await completion.generateCompletion("The quick brown fox", { maxTokens: TOKENS });
    runs.push((performance.now() - t) / Math.max(1, text.length));
  }
  completion.dispose();
  await context.dispose();
  return runs.sort((a, b) => a - b)[Math.floor(runs.length / 2)];
}

console.log(`model ${path}, ${TOKENS} tokens, median of ${REPEATS}, ${availableParallelism()} logical CPUs, cpu variant: ${llama.buildType} ${llama.gpu || "cpu"}`);
console.log("threads | context | ms/token | tokens/s");
// More threads than logical CPUs is never worth measuring: 4 threads on 2 vCPUs ran 892 ms/token here.
for (let threads = 1; threads <= availableParallelism(); threads++) {
  for (const ctx of [512, 2048, 8192]) {
    const ms = await msPerToken(threads, ctx);
    console.log(`${threads} | ${ctx} | ${ms.toFixed(2)} | ${(1000 / ms).toFixed(1)}`);
  }
}
await model.dispose();
await llama.dispose();
