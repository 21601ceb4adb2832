import { GgmlType } from "./format.ts";

/**
 * llama.cpp's file types (`enum llama_ftype` in include/llama.h, stored as `general.file_type`), by the names
 * `llama-quantize` takes and prints (tools/quantize/quantize.cpp), which are also the names model files and
 * Ollama use: "Q4_K_M", "Q8_0", "F16". llama.cpp's own log line spells a few longer ("Q4_K - Medium"); the
 * short names are the ones people type. Values 4, 5, 6 and 33..35 were removed from llama.cpp.
 */
const LLAMA_FILE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  7: "Q8_0",
  8: "Q5_0",
  9: "Q5_1",
  10: "Q2_K",
  11: "Q3_K_S",
  12: "Q3_K_M",
  13: "Q3_K_L",
  14: "Q4_K_S",
  15: "Q4_K_M",
  16: "Q5_K_S",
  17: "Q5_K_M",
  18: "Q6_K",
  19: "IQ2_XXS",
  20: "IQ2_XS",
  21: "Q2_K_S",
  22: "IQ3_XS",
  23: "IQ3_XXS",
  24: "IQ1_S",
  25: "IQ4_NL",
  26: "IQ3_S",
  27: "IQ3_M",
  28: "IQ2_S",
  29: "IQ2_M",
  30: "IQ4_XS",
  31: "IQ1_M",
  32: "BF16",
  36: "TQ1_0",
  37: "TQ2_0",
  38: "MXFP4_MOE",
  39: "NVFP4",
  40: "Q1_0",
  41: "Q2_0",
};

/** The name of a `general.file_type` value, or null when llama.cpp knows no such file type. */
export function fileTypeName(fileType: number): string | null {
  return Object.hasOwn(LLAMA_FILE_TYPE_NAMES, fileType) ? LLAMA_FILE_TYPE_NAMES[fileType] : null;
}

/**
 * The file type llama.cpp assumes for the most common tensor type when a file has no `general.file_type`
 * (llama_model_loader's constructor: Q3_K counts as Q3_K_M, Q4_K as Q4_K_M, Q5_K as Q5_K_M).
 */
const FILE_TYPE_OF_TENSOR_TYPE: Partial<Record<GgmlType, number>> = {
  [GgmlType.F32]: 0,
  [GgmlType.F16]: 1,
  [GgmlType.BF16]: 32,
  [GgmlType.Q4_0]: 2,
  [GgmlType.Q4_1]: 3,
  [GgmlType.Q5_0]: 8,
  [GgmlType.Q5_1]: 9,
  [GgmlType.Q8_0]: 7,
  [GgmlType.Q2_K]: 10,
  [GgmlType.Q3_K]: 12,
  [GgmlType.Q4_K]: 15,
  [GgmlType.Q5_K]: 17,
  [GgmlType.Q6_K]: 18,
  [GgmlType.TQ1_0]: 36,
  [GgmlType.TQ2_0]: 37,
  [GgmlType.IQ2_XXS]: 19,
  [GgmlType.IQ2_XS]: 20,
  [GgmlType.IQ2_S]: 28,
  [GgmlType.IQ3_XXS]: 23,
  [GgmlType.IQ1_S]: 24,
  [GgmlType.IQ1_M]: 31,
  [GgmlType.IQ4_NL]: 25,
  [GgmlType.IQ4_XS]: 30,
  [GgmlType.IQ3_S]: 26,
  [GgmlType.NVFP4]: 39,
  [GgmlType.Q1_0]: 40,
  [GgmlType.Q2_0]: 41,
};

/**
 * Guesses a file's type from its tensors the way llama.cpp does when `general.file_type` is missing — the
 * most common tensor type wins, the first seen on a tie — but counting only weight matrices (two or more
 * dimensions): norms and biases are F32 in every file and say nothing about its quantization. Returns the
 * `llama_ftype` value, or null when there is no matrix or its type has no file type.
 */
export function guessFileType(tensors: ReadonlyArray<{ dims: readonly unknown[]; type: GgmlType }>): number | null {
  const counts = new Map<GgmlType, number>();
  let best: GgmlType | null = null;
  let bestCount = 0;
  for (const t of tensors) {
    if (t.dims.length < 2) continue;
    const n = (counts.get(t.type) ?? 0) + 1;
    counts.set(t.type, n);
    if (n > bestCount) {
      bestCount = n;
      best = t.type;
    }
  }
  return best === null ? null : (FILE_TYPE_OF_TENSOR_TYPE[best] ?? null);
}
