import type { LlamaEmbeddingContext, LlamaModel, LlamaRankingContext, Token } from "node-llama-cpp";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../domain/jobs.ts";
import { KekahydeError, toKekahydeError } from "../errors.ts";

/**
 * A model's jobs other than generation, on node-llama-cpp: embeddings, ranking, tokens. The embedding and
 * ranking contexts are created on first use (each has a KV cache of its own) and kept with the model.
 */
export class ModelJobs {
  private embedding: Promise<LlamaEmbeddingContext> | null = null;
  private ranking: Promise<LlamaRankingContext> | null = null;
  /** Tokens an input may have: the embedding context's size. */
  private readonly room: number;

  constructor(
    private readonly model: LlamaModel,
    private readonly threads: number,
    /** The context size loads of this model got (what it was planned with). */
    contextSize: number,
    /** The vocabulary's size, from the GGUF file. */
    private readonly vocabularySize: number,
  ) {
    this.room = Math.min(contextSize, model.trainContextSize || contextSize);
  }

  /** Tokens of `text` as a prompt would have them (with BOS when the model adds one). */
  private promptTokens(text: string): Token[] {
    const tokens = this.model.tokenize(text);
    const bos = this.model.tokens.bos;
    return bos != null && this.model.tokens.shouldPrependBosToken ? [bos, ...tokens] : tokens;
  }

  async embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult> {
    this.embedding ??= this.model.createEmbeddingContext({ contextSize: this.room, threads: this.threads }).catch((e: unknown) => {
      this.embedding = null;
      throw toKekahydeError(e, "NOT_SUPPORTED", "this model cannot make embeddings");
    });
    const context = await this.embedding;
    const room = this.room;
    const vectors: number[][] = [];
    let promptTokens = 0;
    for (const [i, input] of request.inputs.entries()) {
      if (signal.aborted) throw new KekahydeError("JOB_STOPPED", "Stopped before it finished. Send it again if you still want it.");
      let tokens = this.model.tokenize(input);
      if (tokens.length > room) {
        if (!request.truncate) {
          throw new KekahydeError("PROMPT_TOO_LONG", `Input ${i} is ${tokens.length} tokens but the model embeds at most ${room}. Shorten it, or ask to truncate it.`, { field: "input", prompt_tokens: tokens.length, context_size: room });
        }
        tokens = tokens.slice(0, room);
      }
      promptTokens += tokens.length;
      const embedding = await context.getEmbeddingFor(tokens);
      vectors.push(unitLength(request.dimensions ? embedding.vector.slice(0, request.dimensions) : [...embedding.vector]));
    }
    return { vectors, promptTokens };
  }

  async rank(request: RankRequest, signal: AbortSignal): Promise<RankResult> {
    this.ranking ??= this.model.createRankingContext({ contextSize: this.room, threads: this.threads }).catch((e: unknown) => {
      this.ranking = null;
      throw new KekahydeError("NOT_SUPPORTED", `This model cannot rank documents: it is not a reranker (${e instanceof Error ? e.message : String(e)}). Use a reranking model.`);
    });
    const context = await this.ranking;
    if (signal.aborted) throw new KekahydeError("JOB_STOPPED", "Stopped before it finished. Send it again if you still want it.");
    const scores = await context.rankAll(request.query, request.documents);
    const promptTokens = request.documents.reduce((n, d) => n + this.model.tokenize(d).length, this.model.tokenize(request.query).length * request.documents.length);
    return { scores: [...scores], promptTokens };
  }

  tokenize(request: TokenizeRequest): TokenizeResult {
    const tokens = request.addSpecial ? this.promptTokens(request.text) : this.model.tokenize(request.text);
    return { tokens: [...tokens], ...(request.withPieces && { pieces: tokens.map((t) => this.model.detokenize([t], true)) }) };
  }

  detokenize(request: DetokenizeRequest): DetokenizeResult {
    const size = this.vocabularySize;
    const bad = request.tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= size);
    if (bad >= 0) throw new KekahydeError("BAD_REQUEST", `"tokens"[${bad}] is not a token of this model (its vocabulary has ${size}).`, { field: "tokens" });
    return { text: this.model.detokenize(request.tokens as Token[]) };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.embedding?.then((c) => c.dispose()).catch(() => {}), this.ranking?.then((c) => c.dispose()).catch(() => {})]);
  }
}

/** The vector scaled to length 1 (what OpenAI's and Ollama's clients expect); a zero vector stays as it is. */
export function unitLength(vector: number[]): number[] {
  const norm = Math.hypot(...vector);
  return norm > 0 ? vector.map((v) => v / norm) : vector;
}
