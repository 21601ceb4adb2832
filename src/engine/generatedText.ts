import type { LlamaModel, Token } from "node-llama-cpp";
import type { TokenLogprob } from "../domain/generation.ts";

/**
 * What a generation has written so far, token by token, whichever loop samples the tokens (the plain token
 * loop, or the speculative one): the tokens, their log-probabilities, and the text — decoded once a UTF-8
 * character is whole, cut at a stop string, without a start the chat template leaves (`ignoreStart`), and
 * passed on as it grows, holding back what a stop string may still begin with.
 */

export interface GeneratedTextOptions {
  maxTokens: number;
  /** Token sequences that end the generation (a chat template's end-of-turn markers); not part of the text. */
  stopTokens?: Token[][];
  /** Strings that end the generation; not part of the text. */
  stopStrings?: readonly string[];
  /** Text the reply may begin with that is not part of it (a chat template's whitespace after the turn's header). */
  ignoreStart?: readonly string[];
  /** Keep each token's log-probability, and the `top` most likely alternatives. */
  logprobs?: { top: number } | null;
  onText?(text: string): void;
  /** After each sampled token: how many so far. */
  onToken?(completionTokens: number): void;
}

const endsWith = (tokens: readonly Token[], tail: readonly Token[]) =>
  tail.length > 0 && tokens.length >= tail.length && tail.every((t, i) => tokens[tokens.length - tail.length + i] === t);

/**
 * The log-probability listed for a token the sampling options made impossible (probability 0, or cut by
 * top_k/top_p/min_p): OpenAI's floor, a finite number where log(0) would serialise as null.
 */
const IMPOSSIBLE_LOGPROB = -9999;

const logprobOf = (probability: number | undefined): number =>
  probability !== undefined && probability > 0 ? Math.max(IMPOSSIBLE_LOGPROB, Math.log(probability)) : IMPOSSIBLE_LOGPROB;

type Alternative = NonNullable<TokenLogprob["top"]>[number];

/**
 * `count` tokens to list after `listed` at the floor: the lowest ids not listed yet, whose texts are not
 * listed either (OpenAI's completions key the alternatives by text) and not empty. All are equally
 * impossible, so the id order only makes the choice stable.
 */
function impossibleAlternatives(model: LlamaModel, listed: readonly Alternative[], count: number): Alternative[] {
  const ids = new Set(listed.map((a) => a.token));
  const texts = new Set(listed.map((a) => a.text));
  const fillers: Alternative[] = [];
  for (const token of model.iterateAllTokens()) {
    if (fillers.length >= count) break;
    if (ids.has(token)) continue;
    const text = model.detokenize([token], true);
    if (text === "" || texts.has(text)) continue;
    texts.add(text);
    fillers.push({ token, text, logprob: IMPOSSIBLE_LOGPROB });
  }
  return fillers;
}

/**
 * A sampled token's log-probability and, when `top` > 0, the `top` most likely tokens' at that step.
 * `probabilities` holds only the tokens the sampling options left possible (one, when min_p or top_p cut the
 * rest): the list is filled up to `top` with impossible tokens, as OpenAI always lists `top`.
 */
function tokenLogprob(model: LlamaModel, token: Token, confidence: number | undefined, probabilities: Map<Token, number> | undefined, top: number): TokenLogprob {
  const entry: TokenLogprob = { token, text: model.detokenize([token], true), logprob: logprobOf(confidence) };
  if (top > 0 && probabilities) {
    const likely = [...probabilities.entries()]
      .sort((a, b) => b[1] - a[1] || a[0] - b[0])
      .slice(0, top)
      .map(([t, p]) => ({ token: t, text: model.detokenize([t], true), logprob: logprobOf(p) }));
    entry.top = likely.length < top ? [...likely, ...impossibleAlternatives(model, likely, top - likely.length)] : likely;
  }
  return entry;
}

export class GeneratedText {
  readonly tokens: Token[] = [];
  readonly logprobs: TokenLogprob[] = [];
  private readonly stopStrings: string[];
  private readonly stopTokens: Token[][];
  private readonly ignoreStart: string[];
  private readonly holdBack: number;
  /** Text decoded and kept; the part of it past `sent` has not been passed on yet (a stop string may begin there). */
  private text = "";
  private sent = 0;
  /** Characters at the start that `ignoreStart` drops; null until the start has been decided. */
  private skipped: number | null = null;
  /** Tokens not yet decoded into `text`: an incomplete UTF-8 character waits for its next token. */
  private pending: Token[] = [];

  constructor(
    private readonly model: LlamaModel,
    private readonly options: GeneratedTextOptions,
  ) {
    this.stopStrings = (options.stopStrings ?? []).filter((s) => s.length > 0);
    this.stopTokens = (options.stopTokens ?? []).filter((t) => t.length > 0);
    this.ignoreStart = (options.ignoreStart ?? []).filter((s) => s.length > 0);
    this.holdBack = Math.max(0, ...this.stopStrings.map((s) => s.length - 1));
  }

  /**
   * One sampled token that is not an end-of-generation token. Says "stop" when it completes a stop (token
   * sequence or string), "length" when it is the last one allowed, else null.
   */
  add(token: Token, confidence: number | undefined, probabilities: Map<Token, number> | undefined): "stop" | "length" | null {
    const { model, options } = this;
    this.tokens.push(token);
    if (options.logprobs) this.logprobs.push(tokenLogprob(model, token, confidence, probabilities, options.logprobs.top));
    options.onToken?.(this.tokens.length);
    if (this.stopTokens.some((tail) => endsWith(this.tokens, tail))) return "stop";
    this.pending.push(token);
    const piece = model.detokenize(this.pending);
    if (!piece.endsWith("\uFFFD")) {
      this.text += piece;
      this.pending = [];
      const at = this.stopStrings.map((stop) => this.text.indexOf(stop, Math.max(0, this.sent - this.holdBack))).filter((i) => i >= 0);
      if (at.length > 0) {
        this.text = this.text.slice(0, Math.min(...at));
        return "stop";
      }
      // The start is decided once the text can no longer grow into a longer ignored start.
      if (this.skipped === null && !this.ignoreStart.some((s) => s.length > this.text.length && s.startsWith(this.text))) this.sent = this.skipped = this.ignoredStart();
      if (this.skipped !== null) this.flush(false);
    }
    return this.tokens.length >= options.maxTokens ? "length" : null;
  }

  /** The whole text once the generation has ended for `reason`; what was held back is passed on. */
  finish(reason: string): string {
    if (this.pending.length > 0 && reason !== "stop") this.text += this.model.detokenize(this.pending);
    if (this.skipped === null) this.sent = this.skipped = Math.min(this.ignoredStart(), this.text.length);
    this.flush(true);
    return this.text.slice(this.skipped);
  }

  private ignoredStart(): number {
    return Math.max(0, ...this.ignoreStart.filter((s) => this.text.startsWith(s)).map((s) => s.length));
  }

  private flush(final: boolean): void {
    const upTo = final ? this.text.length : Math.max(this.sent, this.text.length - this.holdBack);
    if (upTo > this.sent) {
      this.options.onText?.(this.text.slice(this.sent, upTo));
      this.sent = upTo;
    }
  }
}
