import { charModelSpec, SKIP_CHAR_MODEL, TINY_CHAR_MODEL, type CharModelShape } from "../../src/gguf/charModel.ts";
import { GgmlType } from "../../src/gguf/format.ts";
import type { LlamaShape } from "../../src/gguf/randomModel.ts";
import { u32, writeGguf, type GgufSpec } from "../../src/gguf/writer.ts";

/**
 * Models for speculative decoding: a target and drafts of the same vocabulary (the char vocabulary of
 * charModel.ts), so that how often a draft agrees with its target is known in advance.
 *
 * - The target is a char model of a realistic size (a few hundred MB of Q8_0 layers, as a small real model):
 *   its matrices are zero, so its greedy text is the char model's (" abcdefgh…"), but every token costs the
 *   compute and memory traffic of its shape.
 * - The ceiling draft is the tiny char model (~1 MB): it writes the same text, so every drafted token holds.
 * - The floor draft is the skip model (" acegi…"): after a letter it never agrees with the target.
 *
 * For tests where the next token depends on the whole context (so that a key-value cache left wrong after a
 * refuted draft would show), see TINY_RANDOM_SHAPE: seeded random weights, two of them with different
 * seeds share one vocabulary and mostly disagree.
 */

export interface DraftTargetShape extends CharModelShape {
  /** Q8_0 writes the zero layers as Q8_0 blocks (as the bench's models); F16/F32 as the char model does. */
  quantized?: boolean;
}

/** ~330 MB of Q8_0 layers: about the cost per token of the 356 MB target measured in issue 17. */
export const SPEC_TARGET_MODEL: DraftTargetShape = {
  name: "kekahyde-spec-target-q8_0",
  embeddingLength: 1024,
  blockCount: 24,
  feedForwardLength: 2816,
  headCount: 8,
  headCountKv: 8,
  contextLength: 4096,
  layerType: GgmlType.F16,
  quantized: true,
};

/** The draft that always agrees with the char target (same text, ~1 MB). */
export const AGREEING_DRAFT_MODEL: CharModelShape = TINY_CHAR_MODEL;
/** The draft that never agrees after a letter (it skips every other letter). */
export const DISAGREEING_DRAFT_MODEL: CharModelShape = SKIP_CHAR_MODEL;

/** A tiny random llama (~0.5 MB) whose greedy text depends on the whole context. */
export const TINY_RANDOM_SHAPE: LlamaShape = {
  name: "kekahyde-random-tiny",
  embeddingLength: 128,
  blockCount: 2,
  feedForwardLength: 256,
  headCount: 4,
  headCountKv: 2,
  contextLength: 2048,
  vocabSize: 600,
};

const ZERO_CHUNK = new Uint8Array(1 << 20);
function* zeroBytes(total: number): Iterable<Uint8Array> {
  for (let left = total; left > 0; left -= ZERO_CHUNK.length) yield left >= ZERO_CHUNK.length ? ZERO_CHUNK : ZERO_CHUNK.subarray(0, left);
}

/** The char model's spec, with its zero layer matrices written as zero Q8_0 blocks when `quantized`. */
function draftTargetSpec(shape: DraftTargetShape): GgufSpec {
  const spec = charModelSpec(shape);
  if (!shape.quantized) return spec;
  const tensors = spec.tensors.map((t) => {
    if (!/^blk\.\d+\.(attn_[qkvo]|attn_output|ffn_gate|ffn_down|ffn_up)\.weight$/.test(t.name)) return t;
    const elements = t.dims.reduce((a, b) => a * b, 1);
    if (t.dims[0] % 32 !== 0) throw new Error(`${t.name}: rows of ${t.dims[0]} are not whole Q8_0 blocks`);
    return { ...t, type: GgmlType.Q8_0, data: () => zeroBytes((elements / 32) * 34) };
  });
  const metadata = spec.metadata.map((entry) => (entry[0] === "general.file_type" ? (["general.file_type", u32(7)] as const) : entry));
  return { metadata, tensors };
}

/** Writes the target to `path`; returns the file size in bytes. */
export function writeDraftTarget(path: string, shape: DraftTargetShape = SPEC_TARGET_MODEL): Promise<number> {
  return writeGguf(path, draftTargetSpec(shape));
}
