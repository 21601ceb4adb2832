import { GgmlType, TokenType } from "./format.ts";
import { baseVocabulary, llamaMetadata } from "./llamaMetadata.ts";
import { writeGguf, type GgufSpec, type GgufTensorSpec } from "./writer.ts";

/**
 * Llama models of realistic shapes with seeded random weights, for benchmarks: speed depends on shapes and
 * types, not on values. Weights are written chunk by chunk, so a 2 GB model never sits in memory. The
 * output row of end-of-sequence is zero, so EOS (logit 0) is never the greedy choice against 32000 random
 * logits, and every requested token is generated.
 */

export interface LlamaShape {
  name: string;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  contextLength: number;
  vocabSize: number;
}

/** TinyLlama-1.1B's shape. */
export const TINYLLAMA_SHAPE: LlamaShape = {
  name: "tinyllama-1.1b-shape",
  embeddingLength: 2048,
  blockCount: 22,
  feedForwardLength: 5632,
  headCount: 32,
  headCountKv: 4,
  contextLength: 2048,
  vocabSize: 32000,
};

/** About 110M parameters, for quick runs. */
export const SMALL_SHAPE: LlamaShape = {
  name: "llama-110m-shape",
  embeddingLength: 768,
  blockCount: 12,
  feedForwardLength: 2048,
  headCount: 12,
  headCountKv: 4,
  contextLength: 2048,
  vocabSize: 32000,
};

export type WeightType = "F16" | "Q8_0";
const EOS = 2;
const CHUNK_ELEMENTS = 1 << 20;

/** xorshift32: fast, seeded, good enough for weights nobody reads. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/** Random F16 values of magnitude 2^-7..2^-3 with random signs: finite, small, no NaN or infinity. */
function* randomF16(elements: number, next: () => number, zeroRows?: { rowLength: number; rows: Set<number> }): Iterable<Uint8Array> {
  for (let done = 0; done < elements; done += CHUNK_ELEMENTS) {
    const n = Math.min(CHUNK_ELEMENTS, elements - done);
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = next();
      out[i] = ((r & 0x8000) | ((8 + ((r >>> 16) & 3)) << 10) | (r & 0x3ff)) & 0xffff;
      if (i + 1 < n) out[i + 1] = (((r >>> 1) & 0x8000) | ((8 + ((r >>> 18) & 3)) << 10) | ((r >>> 20) & 0x3ff)) & 0xffff;
    }
    if (zeroRows) {
      for (const row of zeroRows.rows) {
        const start = row * zeroRows.rowLength - done;
        const end = start + zeroRows.rowLength;
        if (end > 0 && start < n) out.fill(0, Math.max(0, start), Math.min(n, end));
      }
    }
    yield new Uint8Array(out.buffer);
  }
}

/** Random Q8_0 blocks: an F16 scale (~1/1024) and 32 random int8 quants per block of 32 weights. */
function* randomQ8_0(elements: number, next: () => number, zeroRows?: { rowLength: number; rows: Set<number> }): Iterable<Uint8Array> {
  const blocks = elements / 32;
  const perChunk = CHUNK_ELEMENTS / 32;
  for (let done = 0; done < blocks; done += perChunk) {
    const n = Math.min(perChunk, blocks - done);
    const out = new Uint8Array(n * 34);
    const view = new DataView(out.buffer);
    for (let b = 0; b < n; b++) {
      view.setUint16(b * 34, 0x1400, true); // 2^-10
      for (let q = 0; q < 32; q += 4) {
        const r = next();
        view.setUint32(b * 34 + 2 + q, r, true);
      }
    }
    if (zeroRows) {
      const blocksPerRow = zeroRows.rowLength / 32;
      for (const row of zeroRows.rows) {
        const start = row * blocksPerRow - done;
        const end = start + blocksPerRow;
        if (end > 0 && start < n) out.fill(0, Math.max(0, start) * 34, Math.min(n, end) * 34);
      }
    }
    yield out;
  }
}

function vocabulary(size: number): { tokens: string[]; types: number[] } {
  const { tokens, types } = baseVocabulary();
  // Filler pieces that no prompt of letters and spaces can form, so prompts tokenize one token a character.
  for (let i = 0; tokens.length < size; i++) {
    tokens.push(`\u2581w${i}`);
    types.push(TokenType.NORMAL);
  }
  return { tokens, types };
}

export function randomLlamaSpec(shape: LlamaShape, type: WeightType, seed = 1): GgufSpec {
  const next = rng(seed);
  const nEmbd = shape.embeddingLength;
  const headDim = nEmbd / shape.headCount;
  const nEmbdKv = headDim * shape.headCountKv;
  const ggmlType = type === "F16" ? GgmlType.F16 : GgmlType.Q8_0;
  const matrix = (name: string, cols: number, rows: number, zeroRows?: Set<number>): GgufTensorSpec => ({
    name,
    dims: [cols, rows],
    type: ggmlType,
    data: () => (type === "F16" ? randomF16 : randomQ8_0)(cols * rows, next, zeroRows && { rowLength: cols, rows: zeroRows }),
  });
  const ones = (name: string): GgufTensorSpec => ({ name, dims: [nEmbd], type: GgmlType.F32, data: () => [new Uint8Array(new Float32Array(nEmbd).fill(1).buffer)] });

  const tensors: GgufTensorSpec[] = [matrix("token_embd.weight", nEmbd, shape.vocabSize)];
  for (let l = 0; l < shape.blockCount; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      ones(`${p}attn_norm.weight`),
      matrix(`${p}attn_q.weight`, nEmbd, nEmbd),
      matrix(`${p}attn_k.weight`, nEmbd, nEmbdKv),
      matrix(`${p}attn_v.weight`, nEmbd, nEmbdKv),
      matrix(`${p}attn_output.weight`, nEmbd, nEmbd),
      ones(`${p}ffn_norm.weight`),
      matrix(`${p}ffn_gate.weight`, nEmbd, shape.feedForwardLength),
      matrix(`${p}ffn_down.weight`, shape.feedForwardLength, nEmbd),
      matrix(`${p}ffn_up.weight`, nEmbd, shape.feedForwardLength),
    );
  }
  tensors.push(ones("output_norm.weight"), matrix("output.weight", nEmbd, shape.vocabSize, new Set([EOS])));
  const vocab = vocabulary(shape.vocabSize);
  return {
    metadata: llamaMetadata({
      ...shape,
      name: `${shape.name}-${type.toLowerCase()}`,
      fileType: type === "F16" ? 1 : 7,
      tokens: vocab.tokens,
      tokenTypes: vocab.types,
    }),
    tensors,
  };
}

export function writeRandomLlama(path: string, shape: LlamaShape, type: WeightType, seed = 1): Promise<number> {
  return writeGguf(path, randomLlamaSpec(shape, type, seed));
}
