import type { Token } from "node-llama-cpp";

/**
 * Prompt-lookup drafting (n-gram drafting from the context, no draft model): the last `n` tokens of the
 * context are looked up earlier in the context (prompt and generated text); the tokens that followed that
 * earlier occurrence are the draft. Longer n-grams are tried first. Free to compute, and right whenever the
 * answer copies its input (edits, code, answers quoting a document).
 */
export interface LookupDraftOptions {
  /** Longest n-gram to match (default 3). */
  ngramMax?: number;
  /** Shortest n-gram to match (default 1). */
  ngramMin?: number;
}

/**
 * Up to `maxDraft` tokens predicted to follow `tokens`. Of the occurrences of the longest n-gram that
 * matches, the latest with a full-length continuation is used (else the one with the longest continuation).
 */
export function lookupDraft(tokens: readonly Token[], maxDraft: number, options: LookupDraftOptions = {}): Token[] {
  const ngramMax = Math.max(1, options.ngramMax ?? 3);
  const ngramMin = Math.max(1, Math.min(ngramMax, options.ngramMin ?? 1));
  const len = tokens.length;
  if (maxDraft <= 0) return [];
  for (let n = Math.min(ngramMax, len - 1); n >= ngramMin; n--) {
    let best = -1;
    let bestLength = 0;
    // An occurrence starting at i (ending before the pattern itself) continues at i + n.
    for (let i = len - n - 1; i >= 0; i--) {
      let k = 0;
      while (k < n && tokens[i + k] === tokens[len - n + k]) k++;
      if (k < n) continue;
      const available = Math.min(maxDraft, len - (i + n));
      if (available > bestLength) {
        best = i + n;
        bestLength = available;
        if (available === maxDraft) break;
      }
    }
    if (best >= 0) return tokens.slice(best, best + bestLength);
  }
  return [];
}
