import type { LlamaContextSequence, Token } from "node-llama-cpp";

/**
 * Tokens/s of `tokens` greedy tokens generated one at a time with node-llama-cpp's public `evaluateWithMetadata`
 * (the loop src/engine/tokenLoop.ts runs) after `prompt`, on a cleared sequence; the prompt's evaluation is not
 * counted. Shared by bench/flash-attention.ts and bench/token-path.ts.
 */
export async function greedyTokensPerSecond(sequence: LlamaContextSequence, prompt: Token[], tokens: number): Promise<number> {
  await sequence.clearHistory();
  const evaluation = sequence.evaluateWithMetadata(prompt, {}, { temperature: 0, yieldEogToken: true });
  let n = 0;
  let start = 0;
  try {
    let step = await evaluation.next();
    while (!step.done) {
      if (n === 0) start = performance.now();
      if (++n > tokens) break;
      step = await evaluation.next(step.value.token);
    }
  } finally {
    await evaluation.return();
  }
  return tokens / ((performance.now() - start) / 1000);
}
