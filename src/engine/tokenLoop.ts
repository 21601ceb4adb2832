import type { LlamaContextSequence, LlamaGrammar, LlamaModel, Token } from "node-llama-cpp";
import type { TokenLogprob } from "../domain/generation.ts";

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

const endsWith = (tokens: readonly Token[], tail: readonly Token[]) =>
  tail.length > 0 && tokens.length >= tail.length && tail.every((t, i) => tokens[tokens.length - tail.length + i] === t);

/** A sampled token's log-probability and, when `top` > 0, the `top` most likely tokens' at that step. */
export function tokenLogprob(model: LlamaModel, token: Token, confidence: number | undefined, probabilities: Map<Token, number> | undefined, top: number): TokenLogprob {
  const entry: TokenLogprob = { token, text: model.detokenize([token], true), logprob: Math.log(confidence ?? 0) };
  if (top > 0 && probabilities) {
    entry.top = [...probabilities.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([t, p]) => ({ token: t, text: model.detokenize([t], true), logprob: Math.log(p) }));
  }
  return entry;
}

export async function runTokenLoop(options: TokenLoopOptions): Promise<TokenLoopResult> {
  const { model, sequence, prompt, signal } = options;
  // The prompt cache: keep what the sequence already evaluated of this prompt; at least the last prompt token
  // is evaluated again, since its logits are what the first new token is sampled from.
  const cachedTokens = Math.min(commonPrefix(sequence.contextTokens, prompt), prompt.length - 1);
  if (sequence.nextTokenIndex > cachedTokens) await sequence.eraseContextTokenRanges([{ start: cachedTokens, end: sequence.nextTokenIndex }]);

  const stopStrings = (options.stopStrings ?? []).filter((s) => s.length > 0);
  const holdBack = Math.max(0, ...stopStrings.map((s) => s.length - 1));
  const stopTokens = (options.stopTokens ?? []).filter((t) => t.length > 0);
  const wantTop = options.logprobs ? options.logprobs.top : 0;
  const grammarEvaluationState = options.grammar ? new (await import("node-llama-cpp")).LlamaGrammarEvaluationState({ model, grammar: options.grammar }) : undefined;
  const s = options.sampling;

  const generated: Token[] = [];
  const logprobs: TokenLogprob[] = [];
  /** Text decoded and kept; the part of it past `sent` has not been passed on yet (a stop string may begin there). */
  let text = "";
  let sent = 0;
  /** Characters at the start that `ignoreStart` drops; null until the start has been decided. */
  let skipped: number | null = null;
  const ignoreStart = (options.ignoreStart ?? []).filter((s) => s.length > 0);
  /** Tokens not yet decoded into `text`: an incomplete UTF-8 character waits for its next token. */
  let pending: Token[] = [];
  let stopReason: TokenLoopStop = "length";

  const ignoredStart = () => Math.max(0, ...ignoreStart.filter((s) => text.startsWith(s)).map((s) => s.length));
  const flush = (final: boolean) => {
    const upTo = final ? text.length : Math.max(sent, text.length - holdBack);
    if (upTo > sent) {
      options.onText?.(text.slice(sent, upTo));
      sent = upTo;
    }
  };

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
      repeatPenalty: s.repeatPenalty === 1 ? undefined : { penalty: s.repeatPenalty, punishTokens: () => [...prompt, ...generated].slice(-64) },
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
      generated.push(token);
      if (options.logprobs) {
        logprobs.push(tokenLogprob(model, token, confidence, (step.value as { probabilities?: Map<Token, number> }).probabilities, wantTop));
      }
      options.onToken?.(generated.length);
      if (stopTokens.some((tail) => endsWith(generated, tail))) {
        stopReason = "stop";
        break;
      }
      pending.push(token);
      const piece = model.detokenize(pending);
      if (!piece.endsWith("\uFFFD")) {
        text += piece;
        pending = [];
        const at = stopStrings.map((stop) => text.indexOf(stop, Math.max(0, sent - holdBack))).filter((i) => i >= 0);
        if (at.length > 0) {
          text = text.slice(0, Math.min(...at));
          stopReason = "stop";
          break;
        }
        // The start is decided once the text can no longer grow into a longer ignored start.
        if (skipped === null && !ignoreStart.some((s) => s.length > text.length && s.startsWith(text))) sent = skipped = ignoredStart();
        if (skipped !== null) flush(false);
      }
      if (generated.length >= options.maxTokens) {
        stopReason = "length";
        break;
      }
      step = await evaluation.next(token);
    }
  } finally {
    await evaluation.return();
  }
  if (pending.length > 0 && stopReason !== "stop") text += model.detokenize(pending);
  if (skipped === null) sent = skipped = Math.min(ignoredStart(), text.length);
  flush(true);
  return { text: text.slice(skipped), stopReason, completionTokens: generated.length, cachedTokens, ...(options.logprobs && { logprobs }) };
}
