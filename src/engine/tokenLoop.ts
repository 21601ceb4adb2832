import { LlamaGrammarEvaluationState, type LlamaContextSequence, type LlamaGrammar, type LlamaModel, type Token } from "node-llama-cpp";
import type { TokenLogprob } from "../domain/generation.ts";
import { GeneratedText } from "./generatedText.ts";

/**
 * One generation loop of Kekahyde's own, on a context sequence: the prompt's tokens are evaluated after the
 * part of the sequence's cache they share (the prompt cache), then one token at a time is sampled and fed
 * back, with the probabilities asked for, until an end-of-generation token, a stop (a token sequence or a
 * string), the token limit or the abort signal. It does what node-llama-cpp's LlamaChat and LlamaCompletion
 * do for a plain generation, with less per-token machinery, and it can report log-probabilities.
 */

export interface TokenLoopOptions {
  model: LlamaModel;
  sequence: LlamaContextSequence;
  /** The whole prompt, special tokens included. */
  prompt: Token[];
  maxTokens: number;
  /** Token sequences that end the generation (a chat template's end-of-turn markers); not part of the text. */
  stopTokens?: Token[][];
  /** Strings that end the generation; not part of the text. */
  stopStrings?: readonly string[];
  /** Text the reply may begin with that is not part of it (a chat template's whitespace after the turn's header). */
  ignoreStart?: readonly string[];
  sampling: { temperature: number; topK: number; topP: number; minP: number; seed?: number; repeatPenalty: number };
  grammar?: LlamaGrammar;
  /** Ask for each sampled token's log-probability, and the `top` most likely alternatives. */
  logprobs?: { top: number } | null;
  signal: AbortSignal;
  onText?(text: string): void;
  /** After each sampled token: how many so far. */
  onToken?(completionTokens: number): void;
}

export type TokenLoopStop = "eog" | "stop" | "length" | "abort";

export interface TokenLoopResult {
  text: string;
  stopReason: TokenLoopStop;
  completionTokens: number;
  /** Prompt tokens the sequence already held from an earlier request, not evaluated again. */
  cachedTokens: number;
  logprobs?: TokenLogprob[];
}

/** How many leading tokens two sequences share. */
export function commonPrefix(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export async function runTokenLoop(options: TokenLoopOptions): Promise<TokenLoopResult> {
  const { model, sequence, prompt, signal } = options;
  // The prompt cache: keep what the sequence already evaluated of this prompt; at least the last prompt token
  // is evaluated again, since its logits are what the first new token is sampled from.
  const cachedTokens = Math.min(commonPrefix(sequence.contextTokens, prompt), prompt.length - 1);
  if (sequence.nextTokenIndex > cachedTokens) await sequence.eraseContextTokenRanges([{ start: cachedTokens, end: sequence.nextTokenIndex }]);

  const wantTop = options.logprobs ? options.logprobs.top : 0;
  const grammarEvaluationState = options.grammar ? new LlamaGrammarEvaluationState({ model, grammar: options.grammar }) : undefined;
  const s = options.sampling;
  const out = new GeneratedText(model, options);
  let stopReason: TokenLoopStop = "length";

  const evaluation = sequence.evaluateWithMetadata(
    prompt.slice(cachedTokens),
    // Asked for only when logprobs are: node-llama-cpp computes a token's confidence by sorting the whole
    // vocabulary's probabilities, which cost a third of each token's time on the 110M bench model.
    { confidence: options.logprobs != null, probabilities: wantTop > 0 },
    {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: s.minP,
      seed: s.seed,
      // As llama.cpp's: the last 64 tokens of the context are penalised.
      repeatPenalty: s.repeatPenalty === 1 ? undefined : { penalty: s.repeatPenalty, punishTokens: () => [...prompt, ...out.tokens].slice(-64) },
      grammarEvaluationState,
      // Otherwise the evaluation ends silently at an end-of-generation token, which reads as "length".
      yieldEogToken: true,
    },
  );
  try {
    if (options.maxTokens <= 0) return { text: "", stopReason: "length", completionTokens: 0, cachedTokens };
    let step = await evaluation.next();
    while (!step.done) {
      const { token, confidence } = step.value as { token: Token; confidence?: number };
      if (signal.aborted) {
        stopReason = "abort";
        break;
      }
      if (model.isEogToken(token)) {
        stopReason = "eog";
        break;
      }
      const end = out.add(token, confidence, (step.value as { probabilities?: Map<Token, number> }).probabilities);
      if (end !== null) {
        stopReason = end;
        break;
      }
      step = await evaluation.next(token);
    }
  } finally {
    await evaluation.return();
  }
  const text = out.finish(stopReason);
  return { text, stopReason, completionTokens: out.tokens.length, cachedTokens, ...(options.logprobs && { logprobs: out.logprobs }) };
}
