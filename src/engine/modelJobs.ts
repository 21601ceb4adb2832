import type { LlamaEmbeddingContext, LlamaModel, LlamaRankingContext, Token } from "node-llama-cpp";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../domain/jobs.ts";
import { KekahydeError } from "../errors.ts";

/** llama.cpp's pooling types (`<arch>.pooling_type`, enum llama_pooling_type). */
const POOLING_NAMES = ["none", "mean", "cls", "last", "rank"] as const;

const stopped = () => new KekahydeError("JOB_STOPPED", "Stopped before it finished. Send it again if you still want it.");

/**
 * A model's jobs other than generation, on node-llama-cpp: embeddings, ranking, tokens. The embedding and
 * ranking contexts are created on first use (each has a KV cache of its own, beside the generation context,
 * and not counted in the model's planned memory) and kept with the model.
 *
 * Every error a request can cause (too long, not a reranker, a bad token) is a KekahydeError of its own code:
 * anything else thrown here reaches the runtime as an engine failure, which unloads the model.
 *
 * Not batched across inputs: node-llama-cpp's embedding and ranking contexts evaluate one sequence, and its
 * binding reads back the pooled vector of sequence 0 only (AddonContext::GetEmbedding), so the inputs of a
 * request are evaluated one after another, each in as few decodes as its length allows.
 */
export class ModelJobs {
  private embedding: Promise<LlamaEmbeddingContext> | null = null;
  private ranking: Promise<LlamaRankingContext> | null = null;
  /** Tokens an input may have: the context size this model was loaded with, at most its trained length. */
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

  /** `<arch>.pooling_type` from the file, or null where it says none (a generative model). */
  private pooling(): (typeof POOLING_NAMES)[number] | null {
    const value = (this.model.fileInfo.architectureMetadata as { pooling_type?: unknown } | undefined)?.pooling_type;
    return typeof value === "number" && value > 0 ? (POOLING_NAMES[value] ?? null) : null;
  }

  /**
   * The special tokens llama.cpp's tokenizer adds around a text with add_special (BOS or CLS before, EOS or SEP
   * after, as the vocabulary says): node-llama-cpp's own rule for embedding inputs (resolveBeginningTokenToPrepend,
   * resolveEndTokenToAppend), so an input counts what is evaluated.
   */
  private withSpecials(tokens: Token[]): Token[] {
    // node-llama-cpp's LlamaVocabularyType, read as its string values (the enum is not imported as a value here).
    const type: string = this.model.vocabularyType;
    const t = this.model.tokens;
    const first = type === "rwkv" || type === "ugm" ? null : type === "wpm" ? t.bos : t.shouldPrependBosToken ? t.bos : null;
    const last = type === "rwkv" ? null : type === "wpm" ? t.sep : type === "ugm" ? t.eos : t.shouldAppendEosToken ? t.eos : null;
    return [...(first != null ? [first] : []), ...tokens, ...(last != null ? [last] : [])];
  }

  private embeddingContext(): Promise<LlamaEmbeddingContext> {
    if (this.model.fileInsights.hasEncoder && this.model.fileInsights.hasDecoder) {
      return Promise.reject(new KekahydeError("NOT_SUPPORTED", "This model (an encoder-decoder) cannot make embeddings. Use an embedding model.", { field: "model" }));
    }
    // The whole input in one batch: models with non-causal attention (BERT and kin) can only embed that way.
    this.embedding ??= this.model.createEmbeddingContext({ contextSize: this.room, batchSize: this.room, threads: this.threads }).catch((e: unknown) => {
      this.embedding = null;
      throw new KekahydeError("INSUFFICIENT_MEMORY", `Could not create the ${this.room}-token embedding context: ${e instanceof Error ? e.message : String(e)}`);
    });
    return this.embedding;
  }

  private rankingContext(): Promise<LlamaRankingContext> {
    if (!this.model.fileInsights.supportsRanking) {
      return Promise.reject(
        new KekahydeError(
          "NOT_SUPPORTED",
          "This model cannot rank documents: it is not a reranker (it has no classification head, cls.weight or cls.output.weight). Use a reranking model.",
          { field: "model" },
        ),
      );
    }
    this.ranking ??= this.model.createRankingContext({ contextSize: this.room, batchSize: this.room, threads: this.threads }).catch((e: unknown) => {
      this.ranking = null;
      throw new KekahydeError("NOT_SUPPORTED", `This model cannot rank documents: ${e instanceof Error ? e.message : String(e)}`, { field: "model" });
    });
    return this.ranking;
  }

  async embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult> {
    if (this.pooling() === "rank") {
      throw new KekahydeError("NOT_SUPPORTED", "This model is a reranker: its output is a relevance score, not an embedding. Use POST /v1/rerank, or an embedding model.", { field: "model" });
    }
    const size = this.model.embeddingVectorSize;
    if (request.dimensions !== undefined && request.dimensions > size) {
      throw new KekahydeError("BAD_REQUEST", `"dimensions" is ${request.dimensions}, but this model's vectors have ${size}.`, { field: "dimensions", embedding_length: size });
    }
    // Every input is checked before any is evaluated, so a refusal costs nothing. node-llama-cpp evaluates
    // fewer tokens than its context holds.
    const most = this.room - 1;
    const specials = this.withSpecials([]).length;
    const inputs = request.inputs.map((input, i) => {
      let tokens = this.model.tokenize(input);
      if (tokens.length + specials > most) {
        if (!request.truncate) {
          throw new KekahydeError(
            "PROMPT_TOO_LONG",
            `Input ${i} is ${tokens.length + specials} tokens but the model embeds at most ${most}. Shorten it, or ask to truncate it.`,
            { field: "input", index: i, prompt_tokens: tokens.length + specials, context_size: this.room },
          );
        }
        tokens = tokens.slice(0, Math.max(0, most - specials));
      }
      return this.withSpecials(tokens);
    });
    const context = await this.embeddingContext();
    const vectors: number[][] = [];
    let promptTokens = 0;
    for (const tokens of inputs) {
      if (signal.aborted) throw stopped();
      promptTokens += tokens.length;
      // Already with its special tokens, which node-llama-cpp then does not add again.
      const { vector } = await context.getEmbeddingFor(tokens);
      vectors.push(unitLength(request.dimensions ? vector.slice(0, request.dimensions) : [...vector]));
    }
    return { vectors, promptTokens };
  }

  async rank(request: RankRequest, signal: AbortSignal): Promise<RankResult> {
    const context = await this.rankingContext();
    // The tokens each document is evaluated with: the query and the document in the model's rerank template
    // (or BOS query EOS SEP document EOS), as node-llama-cpp builds them.
    const lengths = request.documents.map((document, i) => {
      const length = context.calculateInputLength(request.query, document);
      if (length >= context.contextSize) {
        throw new KekahydeError(
          "PROMPT_TOO_LONG",
          `The query with document ${i} is ${length} tokens but the model ranks at most ${context.contextSize - 1}. Shorten them.`,
          { field: "documents", index: i, prompt_tokens: length, context_size: context.contextSize },
        );
      }
      return length;
    });
    const scores: number[] = [];
    for (const document of request.documents) {
      if (signal.aborted) throw stopped();
      scores.push(await context.rank(request.query, document));
    }
    return { scores, promptTokens: lengths.reduce((a, b) => a + b, 0) };
  }

  tokenize(request: TokenizeRequest): TokenizeResult {
    const text = this.model.tokenize(request.text, request.parseSpecial ?? false);
    const tokens = request.addSpecial ? this.withSpecials(text) : text;
    return { tokens: [...tokens], ...(request.withPieces && { pieces: tokens.map((t) => this.piece(t)) }) };
  }

  /**
   * A token's text as llama-server's /tokenize writes it: a string, or its bytes where they are not valid
   * UTF-8 on their own (a byte-fallback piece, or part of a multi-byte character).
   */
  private piece(token: Token): string | number[] {
    const text = this.model.detokenize([token], true);
    if (!text.includes("\uFFFD")) return text;
    const bytes = pieceBytes(this.vocabularyPiece(token), this.model.vocabularyType);
    if (!bytes) return text;
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes));
    } catch {
      return bytes;
    }
  }

  private vocabularyPiece(token: Token): string | undefined {
    const pieces = (this.model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: unknown } } } | undefined)?.tokenizer?.ggml?.tokens;
    return Array.isArray(pieces) && typeof pieces[token] === "string" ? pieces[token] : undefined;
  }

  detokenize(request: DetokenizeRequest): DetokenizeResult {
    const size = this.vocabularySize;
    const bad = request.tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= size);
    if (bad >= 0) throw new KekahydeError("BAD_REQUEST", `"tokens"[${bad}] is ${request.tokens[bad]}, not a token of this model (its vocabulary has ${size}: 0 to ${size - 1}).`, { field: "tokens" });
    // Special tokens are written as their text, as llama-server's /detokenize does.
    return { text: this.model.detokenize(request.tokens as Token[], true) };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.embedding?.then((c) => c.dispose()).catch(() => {}), this.ranking?.then((c) => c.dispose()).catch(() => {})]);
  }
}

/** The vector scaled to length 1 (what OpenAI's and Ollama's clients expect); a zero vector stays as it is. */
function unitLength(vector: number[]): number[] {
  let sum = 0;
  for (const v of vector) sum += v * v;
  const norm = Math.sqrt(sum);
  return norm > 0 ? vector.map((v) => v / norm) : vector;
}

/** GPT-2's byte-level BPE alphabet, reversed: the character each byte is written as → the byte. */
const BPE_BYTES: ReadonlyMap<string, number> = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable(b) ? b : 256 + extra++), b);
  return map;
})();

/** The bytes a vocabulary piece stands for, where the vocabulary spells bytes out; else null. */
function pieceBytes(piece: string | undefined, vocabularyType: string): number[] | null {
  if (piece === undefined) return null;
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (byte) return [parseInt(byte[1], 16)];
  if (vocabularyType === "bpe") {
    const bytes = [...piece].map((ch) => BPE_BYTES.get(ch));
    if (bytes.every((b) => b !== undefined)) return bytes;
  }
  return null;
}
