import { TokenType } from "./format.ts";
import { bool, f32, f32Array, i32Array, str, strArray, u32, type GgufValue } from "./writer.ts";

/** SentencePiece's visible space. */
export const SPACE_PIECE = "\u2581";

/**
 * The vocabulary every model of ours starts with: <unk>, <s>, </s> (ids 0, 1, 2), any further control
 * tokens, the 256 byte-fallback pieces, the space piece and printable ASCII, one piece a character, so any
 * text tokenizes one token a character.
 */
export function baseVocabulary(extraControls: readonly string[] = []): { tokens: string[]; types: number[] } {
  const tokens = ["<unk>", "<s>", "</s>", ...extraControls];
  const types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, ...extraControls.map(() => TokenType.CONTROL)];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
  }
  tokens.push(SPACE_PIECE);
  types.push(TokenType.NORMAL);
  for (let c = 0x21; c <= 0x7e; c++) {
    tokens.push(String.fromCharCode(c));
    types.push(TokenType.NORMAL);
  }
  return { tokens, types };
}

/** What a llama-architecture GGUF header says about a model the project writes. */
export interface LlamaHeader {
  name: string;
  /** llama.cpp's LLAMA_FTYPE: 0 all F32, 1 mostly F16, 7 mostly Q8_0. */
  fileType: number;
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  /** A SentencePiece ("llama") vocabulary: pieces and their token types; <unk>, <s>, </s> are ids 0, 1, 2. */
  tokens: string[];
  tokenTypes: number[];
  /** Further keys (chat template, end-of-turn token, ...). */
  extra?: ReadonlyArray<readonly [string, GgufValue]>;
}

/** The metadata llama.cpp needs to run a llama model, written the same way for every model of ours. */
export function llamaMetadata(h: LlamaHeader): Array<readonly [string, GgufValue]> {
  return [
    ["general.architecture", str("llama")],
    ["general.name", str(h.name)],
    ["general.file_type", u32(h.fileType)],
    ["llama.context_length", u32(h.contextLength)],
    ["llama.embedding_length", u32(h.embeddingLength)],
    ["llama.block_count", u32(h.blockCount)],
    ["llama.feed_forward_length", u32(h.feedForwardLength)],
    ["llama.attention.head_count", u32(h.headCount)],
    ["llama.attention.head_count_kv", u32(h.headCountKv)],
    ["llama.rope.dimension_count", u32(h.embeddingLength / h.headCount)],
    ["llama.rope.freq_base", f32(10000)],
    ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
    ["llama.vocab_size", u32(h.tokens.length)],
    ["tokenizer.ggml.model", str("llama")],
    ["tokenizer.ggml.tokens", strArray(h.tokens)],
    ["tokenizer.ggml.scores", f32Array(new Float32Array(h.tokens.length))],
    ["tokenizer.ggml.token_type", i32Array(h.tokenTypes)],
    ["tokenizer.ggml.unknown_token_id", u32(0)],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["tokenizer.ggml.eos_token_id", u32(2)],
    ["tokenizer.ggml.add_bos_token", bool(true)],
    ["tokenizer.ggml.add_eos_token", bool(false)],
    // Prompts tokenize one piece a character, with no space added in front.
    ["tokenizer.ggml.add_space_prefix", bool(false)],
    ...(h.extra ?? []),
  ];
}
