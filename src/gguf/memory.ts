import type { GgufInfo } from "./reader.ts";

/** Working memory llama.cpp needs beyond weights and KV cache (compute buffers, scratch), roughly. */
const OVERHEAD_BYTES = 64 * 1024 * 1024;

function num(info: GgufInfo, key: string): number | null {
  const v = info.metadata.get(`${info.architecture}.${key}`);
  return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : null;
}

/** Bytes of an F16 KV cache for `contextSize` tokens, from the model's metadata (0 when it cannot tell). */
export function kvCacheBytes(info: GgufInfo, contextSize: number): number {
  const layers = info.blockCount ?? 0;
  const embd = num(info, "embedding_length") ?? 0;
  const heads = num(info, "attention.head_count") || 1;
  const kvHeads = num(info, "attention.head_count_kv") ?? heads;
  const headDim = embd / heads;
  const keyLength = num(info, "attention.key_length") ?? headDim;
  const valueLength = num(info, "attention.value_length") ?? headDim;
  return layers * contextSize * kvHeads * (keyLength + valueLength) * 2;
}

/** What loading the model with this context will take in memory: weights + KV cache + working buffers. */
export function estimateModelMemory(info: GgufInfo, contextSize: number): { weights: number; kvCache: number; total: number } {
  const kvCache = kvCacheBytes(info, contextSize);
  return { weights: info.weightsBytes, kvCache, total: info.weightsBytes + kvCache + OVERHEAD_BYTES };
}
