import type { LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import { commonPrefix } from "../tokenLoop.ts";

/**
 * Drafting with a small model of the same vocabulary, on a context sequence of its own. Before each draft
 * the draft sequence is brought level with the target's tokens (what it already holds of them is kept, the
 * rest erased and evaluated), then the draft model writes greedily until `maxDraft` tokens, an
 * end-of-generation token, or a token it is less sure of than `minConfidence`.
 */
export interface ModelDraftOptions {
  sequence: LlamaContextSequence;
  model: LlamaModel;
  /** Stop drafting at a token whose probability under the draft model is below this (default 0: never). */
  minConfidence?: number;
}

export class ModelDrafter {
  constructor(private readonly options: ModelDraftOptions) {}

  async draft(context: readonly Token[], maxDraft: number): Promise<Token[]> {
    if (maxDraft <= 0 || context.length === 0) return [];
    const { sequence, model } = this.options;
    // Room in the draft sequence's context: never let the draft trigger a context shift.
    const room = sequence.contextSize - context.length;
    if (room <= 1) return [];
    maxDraft = Math.min(maxDraft, room - 1);
    // Keep what the draft sequence already holds of the context, but evaluate at least the last token again:
    // its logits give the first draft token.
    const keep = Math.min(commonPrefix(sequence.contextTokens, context), context.length - 1);
    if (sequence.nextTokenIndex > keep) await sequence.eraseContextTokenRanges([{ start: keep, end: sequence.nextTokenIndex }]);
    const minConfidence = this.options.minConfidence ?? 0;
    const out: Token[] = [];
    const evaluation = sequence.evaluateWithMetadata(context.slice(keep), { confidence: minConfidence > 0 }, {
      temperature: 0,
      // Otherwise the evaluation ends silently at an end-of-generation token; drafted, it can end the target's text.
      yieldEogToken: true,
    });
    try {
      let step = await evaluation.next();
      while (!step.done) {
        const { token, confidence } = step.value as { token: Token; confidence?: number };
        if (minConfidence > 0 && (confidence ?? 0) < minConfidence) break;
        out.push(token);
        if (out.length >= maxDraft || model.isEogToken(token)) break;
        step = await evaluation.next(token);
      }
    } finally {
      await evaluation.return();
    }
    return out;
  }
}
