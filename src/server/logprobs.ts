import type { TokenLogprob } from "../domain/generation.ts";

/**
 * Log-probabilities as the APIs write them. OpenAI's chat and Ollama share one shape (token, logprob, UTF-8
 * bytes, the most likely alternatives); OpenAI's completions keep the older parallel lists.
 */

const bytesOf = (text: string): number[] => [...Buffer.from(text, "utf8")];

export interface TokenLogprobView {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: Array<{ token: string; logprob: number; bytes: number[] }>;
}

/** OpenAI chat's `choices[].logprobs.content` and Ollama's `logprobs`. */
export function tokenLogprobsView(list: readonly TokenLogprob[]): TokenLogprobView[] {
  return list.map((t) => ({
    token: t.text,
    logprob: t.logprob,
    bytes: bytesOf(t.text),
    top_logprobs: (t.top ?? []).map((a) => ({ token: a.text, logprob: a.logprob, bytes: bytesOf(a.text) })),
  }));
}

export interface CompletionLogprobsView {
  tokens: string[];
  token_logprobs: number[];
  /** Per step, the most likely tokens' texts to their log-probabilities. */
  top_logprobs: Array<Record<string, number>> | null;
  /** Where each token starts in the completion's text, in characters. */
  text_offset: number[];
}

/** OpenAI completions' `choices[].logprobs`: `top` is how many alternatives were asked for (0: none listed). */
export function completionLogprobsView(list: readonly TokenLogprob[], top: number): CompletionLogprobsView {
  const offsets: number[] = [];
  let at = 0;
  for (const t of list) {
    offsets.push(at);
    at += t.text.length;
  }
  return {
    tokens: list.map((t) => t.text),
    token_logprobs: list.map((t) => t.logprob),
    top_logprobs: top > 0 ? list.map((t) => Object.fromEntries((t.top ?? []).map((a) => [a.text, a.logprob]))) : null,
    text_offset: offsets,
  };
}
