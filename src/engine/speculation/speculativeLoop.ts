import type { LlamaContextSequence, LlamaModel, SequenceEvaluateOptions, Token } from "node-llama-cpp";
import { GeneratedText } from "../generatedText.ts";
import { commonPrefix, runTokenLoop, type TokenLoopOptions, type TokenLoopResult, type TokenLoopStop } from "../tokenLoop.ts";
import { lookupDraft } from "./lookupDraft.ts";
import { ModelDrafter } from "./modelDraft.ts";

/**
 * Speculative decoding on a context sequence, with the inputs and result of runTokenLoop (tokenLoop.ts).
 *
 * Each round a drafter proposes up to `maxDraft` tokens (a draft model, or prompt lookup: n-grams of the
 * context found earlier in it); the target evaluates its pending token and the whole draft in one batch,
 * with a sampled token at every position (`controlledEvaluate`); the draft holds up to the first position
 * where the target's token differs, and that token of the target's is taken too, so every round yields at
 * least one token. The refuted draft tokens are erased from the sequence's key-value cache.
 *
 * Verification is greedy: the target's tokens are the argmax ones, so the text is the text of plain greedy
 * decoding (but at a near-tie: llama.cpp's batched kernels round differently from one token's; see
 * docs/speculative.md). With a temperature above 0, or a grammar, the generation falls back to runTokenLoop
 * (plain decoding) and reports no drafted tokens.
 *
 * The draft length adapts: it starts at 4, doubles after a fully accepted draft (up to `maxDraft`) and shrinks
 * to what held (at least 1) otherwise; after a round in which nothing held, drafting pauses for 1, 4, 16, then
 * 64 rounds of plain decoding (the streak of such rounds sets which), so a draft that never agrees costs little
 * (the floor). On a CPU a batch of n tokens costs nearly n single tokens until n is large (llama-bench on the
 * bench's target, 1 thread, quiet machine: pp1 69 tokens/s, pp9 89, pp17 138, pp33 153), so long drafts pay
 * only when they hold, and a wrong one is expensive.
 */

export type DraftOptions =
  | {
      kind: "model";
      /** A context sequence of the draft model, used by this generation only. */
      sequence: LlamaContextSequence;
      model: LlamaModel;
      /** Most tokens drafted per round (default 32). */
      maxDraft?: number;
      /** Stop a draft at a token the draft model gives less than this probability (default 0: never). */
      minConfidence?: number;
    }
  | {
      kind: "lookup";
      /** Longest n-gram looked up in the context (default 3); the shortest is `ngramMin` (default 1). */
      ngramMax?: number;
      ngramMin?: number;
      /** Most tokens drafted per round (default 32). */
      maxDraft?: number;
    }
  | {
      /** Any other drafter (tests use one that is right for a while, then wrong). */
      kind: "custom";
      draft(context: readonly Token[], maxDraft: number): Promise<Token[]> | Token[];
      /** Most tokens drafted per round (default 32). */
      maxDraft?: number;
    };

export interface SpeculativeLoopOptions extends TokenLoopOptions {
  draft?: DraftOptions | null;
  /** How the draft length adapts (the defaults are the bench's choice; docs/speculative.md). */
  adapt?: { firstDraft?: number; maxPauseRounds?: number };
}

export const DEFAULT_MAX_DRAFT = 32;
const DEFAULT_FIRST_DRAFT = 4;
const DEFAULT_MAX_PAUSE_ROUNDS = 64;

export interface SpeculativeLoopResult extends TokenLoopResult {
  /** Tokens the drafter proposed and the target checked. */
  draftedTokens: number;
  /** Of those, the ones that held (part of the text, unless a stop came first). */
  acceptedTokens: number;
}

/** Whether a generation with these options is verified speculatively (otherwise it is plain decoding). */
export function speculates(options: Pick<SpeculativeLoopOptions, "draft" | "sampling" | "grammar">): boolean {
  return options.draft != null && options.sampling.temperature <= 0 && options.grammar == null;
}

export async function runSpeculativeLoop(options: SpeculativeLoopOptions): Promise<SpeculativeLoopResult> {
  if (!speculates(options)) return { ...(await runTokenLoop(options)), draftedTokens: 0, acceptedTokens: 0 };
  const draftOptions = options.draft!;
  const { model, sequence, prompt, signal } = options;

  // The prompt cache, as runTokenLoop's: the last prompt token is always evaluated again.
  const cachedTokens = Math.min(commonPrefix(sequence.contextTokens, prompt), prompt.length - 1);
  if (sequence.nextTokenIndex > cachedTokens) await sequence.eraseContextTokenRanges([{ start: cachedTokens, end: sequence.nextTokenIndex }]);
  if (options.maxTokens <= 0) return { text: "", stopReason: "length", completionTokens: 0, cachedTokens, draftedTokens: 0, acceptedTokens: 0 };

  const wantTop = options.logprobs ? options.logprobs.top : 0;
  const s = options.sampling;

  const maxDraft = Math.max(1, draftOptions.maxDraft ?? DEFAULT_MAX_DRAFT);
  const maxPause = Math.max(1, options.adapt?.maxPauseRounds ?? DEFAULT_MAX_PAUSE_ROUNDS);
  const drafter =
    draftOptions.kind === "model"
      ? new ModelDrafter({ sequence: draftOptions.sequence, model: draftOptions.model, minConfidence: draftOptions.minConfidence })
      : draftOptions.kind === "lookup"
        ? { draft: (context: readonly Token[], n: number) => Promise.resolve(lookupDraft(context, n, draftOptions)) }
        : { draft: async (context: readonly Token[], n: number) => (await draftOptions.draft(context, n)).slice(0, n) };

  const out = new GeneratedText(model, options);
  /** The prompt and every token generated so far: what the drafter continues. */
  const context: Token[] = prompt.slice();
  let stopReason: TokenLoopStop | null = null;
  let draftedTokens = 0;
  let acceptedTokens = 0;

  /** One token of the target's, handled as runTokenLoop handles a sampled token; sets stopReason to end. */
  const take = (token: Token, confidence: number | undefined, probabilities: Map<Token, number> | undefined) => {
    if (signal.aborted) return void (stopReason = "abort");
    if (model.isEogToken(token)) return void (stopReason = "eog");
    context.push(token);
    stopReason = out.add(token, confidence, probabilities);
  };

  const sampleOptions: SequenceEvaluateOptions = {
    temperature: 0,
    topK: s.topK,
    topP: s.topP,
    minP: s.minP,
    seed: s.seed,
  };
  /** What to sample after a batch position, `drafted` draft tokens into the round. */
  const generateNext = (drafted: number) => ({
    token: true,
    confidence: options.logprobs != null,
    probabilities: wantTop > 0,
    options: {
      ...sampleOptions,
      // As runTokenLoop's: the last 64 tokens before each sampled token are penalised.
      ...(s.repeatPenalty !== 1 && { repeatPenalty: { penalty: s.repeatPenalty, punishTokens: [...context.slice(-64), ...draft.slice(0, drafted)].slice(-64) } }),
    },
  });

  /** Tokens not yet in the sequence that the next batch starts with (the prompt's rest, then one token). */
  let input: Token[] = prompt.slice(cachedTokens);
  let draftLength = Math.min(maxDraft, Math.max(1, options.adapt?.firstDraft ?? DEFAULT_FIRST_DRAFT));
  let misses = 0;
  let pause = 0;
  let draft: Token[] = [];

  while (stopReason === null) {
    if (signal.aborted) {
      stopReason = "abort";
      break;
    }
    const base = sequence.nextTokenIndex; // == context.length - input.length
    const room = sequence.contextSize - base - input.length;
    const limit = Math.min(draftLength, options.maxTokens - out.tokens.length - 1, room - 1);
    draft = [];
    if (pause > 0) pause--;
    else if (limit > 0) draft = await drafter.draft(context, limit);

    const batch: Parameters<LlamaContextSequence["controlledEvaluate"]>[0] = input.slice(0, -1);
    batch.push([input[input.length - 1], { generateNext: generateNext(0) }]);
    for (let i = 0; i < draft.length; i++) batch.push([draft[i], { generateNext: generateNext(i + 1) }]);
    const results = await sequence.controlledEvaluate(batch);

    // The target's token after the input, then after each draft token, for as long as the draft holds.
    let held = 0;
    const first = input.length - 1;
    for (let i = 0; i <= draft.length; i++) {
      const next = results[first + i]?.next;
      const token = next?.token;
      if (next == null || token == null) throw new Error("the target sampled no token");
      take(token, next.confidence, next.probabilities);
      if (stopReason !== null) break;
      if (i < draft.length && draft[i] === token) held++;
      else break;
    }
    draftedTokens += draft.length;
    acceptedTokens += held;
    // The sequence holds the input and the whole draft; only the draft tokens that held stay.
    const keep = base + input.length + held;
    if (sequence.nextTokenIndex > keep) await sequence.eraseContextTokenRanges([{ start: keep, end: sequence.nextTokenIndex }]);
    input = [context[context.length - 1]];

    if (draft.length > 0) {
      if (held === draft.length) draftLength = Math.min(maxDraft, draftLength * 2);
      else draftLength = Math.max(1, held);
      if (held === 0) {
        misses += 1;
        pause = Math.min(maxPause, 4 ** (misses - 1));
      } else misses = 0;
    }
  }
  // The sequence now holds what runTokenLoop's would: every token that a sampled token was sampled after.
  const end: TokenLoopStop = stopReason ?? "length";
  const text = out.finish(end);
  return {
    text,
    stopReason: end,
    completionTokens: out.tokens.length,
    cachedTokens,
    ...(options.logprobs && { logprobs: out.logprobs }),
    draftedTokens,
    acceptedTokens,
  };
}
