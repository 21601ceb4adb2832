import type { GgufInfo } from "./reader.ts";

/** Working memory llama.cpp needs beyond weights and KV cache (compute buffers, scratch), roughly. */
const OVERHEAD_BYTES = 64 * 1024 * 1024;

/**
 * What the engine keeps per vocabulary token besides the token's text, as measured: a file with a 5-million-token
 * vocabulary was estimated at 389 MiB without it and its engine process then used 2,349 MiB, so
 * (2349 - 389) MiB / 5e6 ≈ 411 bytes a token. Where it goes: llama.cpp's GGUF context holds every piece as a
 * std::string (32 bytes) with its score and type (8); llama_vocab's id_to_token a second std::string with score
 * and attributes (40); token_to_id an unordered_map node with a third std::string, the id and the cached hash,
 * and a bucket (~64); cache_token_to_piece a fourth std::string (32); and node-llama-cpp's GGUF reader, in the
 * same process, every piece as a JavaScript string in an array (~40). That is ~220 bytes; malloc's overhead on
 * each of these small blocks (16 bytes and rounding, five blocks a token) and the heap left behind by the
 * loader's temporaries make up the rest. Pieces longer than 15 bytes do not fit a std::string's inline
 * buffer: their text is added on top.
 */
export const VOCABULARY_BYTES_PER_TOKEN = 400;

function num(info: GgufInfo, key: string): number | null {
  const v = info.metadata.get(`${info.architecture}.${key}`);
  return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : null;
}

/** Bytes of an F16 KV cache for `contextSize` tokens, from the model's metadata (0 when it cannot tell). */
function kvCacheBytes(info: GgufInfo, contextSize: number): number {
  const layers = info.blockCount ?? 0;
  const embd = num(info, "embedding_length") ?? 0;
  const heads = num(info, "attention.head_count") || 1;
  const kvHeads = num(info, "attention.head_count_kv") ?? heads;
  const headDim = embd / heads;
  const keyLength = num(info, "attention.key_length") ?? headDim;
  const valueLength = num(info, "attention.value_length") ?? headDim;
  return layers * contextSize * kvHeads * (keyLength + valueLength) * 2;
}

/** Bytes the engine keeps for the model's vocabulary: a real one takes tens of MiB, a crafted one gigabytes. */
function vocabularyBytes(info: GgufInfo): number {
  return info.vocabulary.tokens * VOCABULARY_BYTES_PER_TOKEN + info.vocabulary.textBytes;
}

/** What loading the model with this context will take in memory: weights + KV cache + vocabulary + working buffers. */
export function estimateModelMemory(info: GgufInfo, contextSize: number): { weights: number; kvCache: number; vocabulary: number; total: number } {
  const kvCache = kvCacheBytes(info, contextSize);
  const vocabulary = vocabularyBytes(info);
  return { weights: info.weightsBytes, kvCache, vocabulary, total: info.weightsBytes + kvCache + vocabulary + OVERHEAD_BYTES };
}
