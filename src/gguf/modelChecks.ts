import { GgmlType, GgufValueType, MATRIX_TYPES } from "./format.ts";
// reader.ts runs these checks and defines the error they throw; the cycle is safe because neither module
// uses the other's exports while it is being evaluated.
import { GgufFormatError, type GgufInfo, type GgufMetadataValue } from "./info.ts";

/**
 * Checks over a parsed GGUF header for facts that llama.cpp does not check and that kill the process
 * natively (GGML_ASSERT, SIGSEGV, an uncaught C++ exception) once it loads or runs the model, so that such a
 * file is refused with a reason before any engine sees it. Each rule follows llama.cpp's own code (the
 * version node-llama-cpp 3.21.1 ships); `scripts/probe-crafted.ts` shows the crash each one prevents, on
 * files from `craftedModels.ts`.
 *
 * Every check is pure and bounded: one pass over the tensor table, the metadata it names and the token list.
 */

/** ggml's TENSOR_ALIGNMENT: the CPU backend asserts that a mapped buffer starts on this boundary. */
const TENSOR_ALIGNMENT = 32;
/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS (src/llama-hparams.h), both GGML_ASSERTed. */
export const LLAMA_MAX_LAYERS = 512;
const LLAMA_MAX_EXPERTS = 1024;

const CRAFTED = "the file is damaged or was crafted";

function fail(message: string): never {
  throw new GgufFormatError(message);
}

const describeValue = (v: GgufMetadataValue): string =>
  Array.isArray(v) ? `[${v.slice(0, 8).map(describeValue).join(", ")}${v.length > 8 ? ", …" : ""}]` : typeof v === "string" ? JSON.stringify(v) : String(v);

/** A numeric key as a list of numbers (a scalar is one value, a per-layer array many); null when absent or not numeric. */
function numbers(info: GgufInfo, key: string): number[] | null {
  const v = info.metadata.get(key);
  const one = (x: unknown): number | null => (typeof x === "number" ? x : typeof x === "bigint" ? Number(x) : null);
  if (Array.isArray(v)) {
    const out = v.map(one);
    return out.every((x) => x !== null) ? out : null;
  }
  const n = one(v);
  return n === null ? null : [n];
}

// ---------------------------------------------------------------------------------------------------------
// Tensor data placement

/**
 * llama.cpp maps the file and hands ggml pointers into it; the CPU backend asserts that a buffer starts on a
 * 32-byte boundary (GGML_ASSERT(ptr % TENSOR_ALIGNMENT == 0)). Which tensor starts a buffer depends on how
 * layers are split between devices, so every tensor must be aligned. A general.alignment of 32 or more
 * guarantees it; a smaller one (which GGUF allows) only by chance.
 */
function checkTensorAlignment(info: GgufInfo): void {
  for (const t of info.tensors) {
    if (t.offset % BigInt(TENSOR_ALIGNMENT) !== 0n) {
      fail(
        `tensor ${t.name}'s data starts at byte ${t.offset}, which is not on a ${TENSOR_ALIGNMENT}-byte boundary ` +
          `(general.alignment is ${info.alignment}); llama.cpp maps the file and aborts on unaligned tensor data, so ${CRAFTED}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tensor types by role

/**
 * Weight matrices: llama.cpp multiplies by them (ggml_mul_mat) or looks rows up in them (ggml_get_rows). The
 * CPU backend's loader check accepts any type for these and the first evaluation then calls a missing kernel.
 */
const MATRIX_TENSOR =
  /^(?:token_embd|output|blk\.\d+\.(?:attn_(?:q|k|v|qkv|output)|ffn_(?:gate|up|down)(?:_exps|_shexp)?|ffn_gate_inp))\.weight$/;
/**
 * Norm weights and biases: llama.cpp applies them with ggml_mul / ggml_add to F32 activations, and ggml-cpu's
 * binary ops only take an F32 second operand there. llama.cpp's converter writes every norm and bias as F32
 * and its quantizer never touches them.
 */
const F32_TENSOR = /(?:_norm\.weight|\.bias)$/;

const typeName = (type: GgmlType) => GgmlType[type] ?? `type ${type}`;

export function checkTensorTypes(info: GgufInfo): void {
  for (const t of info.tensors) {
    if (MATRIX_TENSOR.test(t.name) && !MATRIX_TYPES.has(t.type)) {
      fail(
        `tensor ${t.name} is stored as ${typeName(t.type)}, a type llama.cpp has no matrix kernel for ` +
          `(weights are F32, F16, BF16 or a quantized type); the engine would crash on the first token, so ${CRAFTED}`,
      );
    }
    if (F32_TENSOR.test(t.name) && t.type !== GgmlType.F32) {
      fail(
        `tensor ${t.name} is stored as ${typeName(t.type)}, but llama.cpp can only apply norm weights and biases stored as F32; ` +
          `the engine would abort on the first token, so ${CRAFTED}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Hyperparameters

/**
 * Architectures in which llama.cpp builds attention (with head_count and head_count_kv heads) and a
 * feed-forward network (feed_forward_length wide) in every layer, so a zero there is a tensor of width zero,
 * which llama.cpp's loader asserts against. Hybrid and recurrent architectures (mamba, rwkv, jamba, deci,
 * nemotron_h, granitehybrid, lfm2, ...) legitimately write zeros for layers without attention or FFN and
 * are left alone.
 */
const DENSE_TRANSFORMERS: ReadonlySet<string> = new Set([
  "llama", "mistral3", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "granite", "starcoder2", "stablelm",
  "internlm2", "olmo2", "smollm3", "gptneox", "gpt2", "falcon", "baichuan", "command-r", "exaone",
]);

const ROPE_SCALING_TYPES = ["none", "linear", "yarn", "longrope"];

export function checkHyperparameters(info: GgufInfo): void {
  const arch = info.architecture;
  const key = (k: string) => `${arch}.${k}`;
  const scalar = (k: string): number | null => {
    const v = numbers(info, key(k));
    return v && v.length === 1 && !Array.isArray(info.metadata.get(key(k))) ? v[0] : null;
  };

  const layers = scalar("block_count");
  if (layers !== null && (layers < 1 || layers > LLAMA_MAX_LAYERS)) {
    fail(`${key("block_count")} is ${layers}, but llama.cpp runs 1 to ${LLAMA_MAX_LAYERS} layers and aborts otherwise, so ${CRAFTED}`);
  }
  const nextn = scalar("nextn_predict_layers");
  if (nextn !== null && layers !== null && nextn > layers) {
    fail(`${key("nextn_predict_layers")} is ${nextn}, more than the model's ${layers} layers (${key("block_count")}); llama.cpp aborts on it, so ${CRAFTED}`);
  }

  const embd = scalar("embedding_length");
  if (embd !== null && embd < 1) fail(`${key("embedding_length")} is ${embd}: a model needs a width of at least 1, so ${CRAFTED}`);

  if (DENSE_TRANSFORMERS.has(arch)) {
    for (const k of ["attention.head_count", "attention.head_count_kv", "feed_forward_length"]) {
      const values = numbers(info, key(k));
      if (values === null) continue;
      const bad = values.findIndex((v) => !(v >= 1));
      if (bad !== -1) {
        const where = values.length > 1 ? ` (layer ${bad} of ${describeValue(info.metadata.get(key(k))!)})` : "";
        fail(`${key(k)} is ${values[bad]}${where}, but every ${arch} layer needs at least 1; llama.cpp aborts building a tensor of width 0, so ${CRAFTED}`);
      }
    }
  }

  checkExperts(info, arch);

  for (const k of ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"]) {
    const eps = scalar(k);
    if (eps === null || (Number.isFinite(eps) && eps >= 0)) continue;
    const shown = Number.isFinite(eps) ? String(Number(eps.toPrecision(7))) : String(eps);
    fail(
      `${key(k)} is ${shown}, but a norm epsilon must be a finite number >= 0 ` +
        (eps === Infinity ? "(an infinite one zeroes every normalized activation)" : "(ggml asserts it and aborts)") +
        `, so ${CRAFTED}`,
    );
  }

  const scaling = info.metadata.get(key("rope.scaling.type"));
  if (typeof scaling === "string" && !ROPE_SCALING_TYPES.includes(scaling)) {
    fail(`${key("rope.scaling.type")} is ${JSON.stringify(scaling)}, not one of ${ROPE_SCALING_TYPES.join(", ")}; llama.cpp aborts on it, so ${CRAFTED}`);
  }
}

/** The expert counts llama.cpp GGML_ASSERTs in llama_model_base::load_hparams. */
function checkExperts(info: GgufInfo, arch: string): void {
  const key = (k: string) => `${arch}.${k}`;
  const first = (k: string) => numbers(info, key(k))?.[0] ?? 0;
  let experts = first("expert_count");
  const usedValues = numbers(info, key("expert_used_count")) ?? [0];
  let used = Math.max(...usedValues);
  // Hunyuan dense models may say expert_count 1; llama.cpp treats that as no experts.
  if ((arch === "hunyuan-dense" || arch === "hunyuan_vl") && experts <= 1) [experts, used] = [0, 0];
  const groups = first("expert_group_count");
  const groupsUsed = first("expert_group_used_count");
  const bad = (what: string) => fail(`${what}; llama.cpp aborts on this, so ${CRAFTED}`);

  if (experts > LLAMA_MAX_EXPERTS) bad(`${key("expert_count")} is ${experts}, more than llama.cpp's limit of ${LLAMA_MAX_EXPERTS}`);
  if (used > experts) {
    bad(experts > 0
      ? `${key("expert_used_count")} is ${used}, more than the ${experts} experts the model has (${key("expert_count")})`
      : `${key("expert_used_count")} is ${used}, but the model has no experts (${key("expert_count")} is absent or 0)`);
  }
  if (experts > 0) {
    if (used < 1) bad(`${key("expert_count")} is ${experts} but ${key("expert_used_count")} is absent or 0: a mixture of experts must use at least one`);
    if (groups >= experts) bad(`${key("expert_group_count")} is ${groups}, not fewer than the ${experts} experts`);
    if (groups > 1) {
      if (experts % groups !== 0) bad(`${key("expert_count")} ${experts} is not a multiple of ${key("expert_group_count")} ${groups}`);
      if (groupsUsed < 1 || groupsUsed >= groups) bad(`${key("expert_group_used_count")} is ${groupsUsed}, but it must be 1 to ${groups - 1}`);
    }
  } else if (groups !== 0) {
    bad(`${key("expert_group_count")} is ${groups} in a model without experts`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Vocabulary

/** The tokenizer.ggml.model values llama.cpp's llama_vocab::impl::load knows, besides "none"/"no_vocab". */
const TOKENIZER_MODELS: readonly string[] = ["llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "gemma4", "hybriddna", "whitespace"];

/**
 * tokenizer.ggml.model must name a tokenizer llama.cpp has. "none" and "no_vocab" (the same to llama.cpp: a
 * model without a vocabulary, such as an audio decoder) load, and then abort on the first text, which is all
 * this daemon does with a model. The token list must not be empty and must not hold the same piece twice:
 * llama.cpp asserts that its piece-to-id map is as long as the list. Empty pieces are allowed, as llama.cpp
 * allows them (it renames each "[EMPTY_<id>]" and warns); such a name then counts as a piece of its own.
 */
export function checkVocabulary(info: GgufInfo): void {
  const model = info.metadata.get("tokenizer.ggml.model");
  if (model === "none" || model === "no_vocab") {
    fail(`tokenizer.ggml.model is ${JSON.stringify(model)}: the model has no vocabulary, so it cannot read or write text (llama.cpp aborts on the first tokenization)`);
  }
  if (typeof model !== "string") fail("metadata lacks tokenizer.ggml.model (a string naming the tokenizer), so no text can be tokenized");
  if (!TOKENIZER_MODELS.includes(model)) {
    fail(`tokenizer.ggml.model is ${JSON.stringify(model)}, not a tokenizer llama.cpp knows (${TOKENIZER_MODELS.join(", ")}), so ${CRAFTED}`);
  }

  const tokens = info.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || info.arrayItemTypes.get("tokenizer.ggml.tokens") !== GgufValueType.STRING) {
    fail("metadata lacks tokenizer.ggml.tokens, the vocabulary as a list of strings");
  }
  if (tokens.length === 0) fail(`tokenizer.ggml.tokens is an empty list: the model has no vocabulary, so ${CRAFTED}`);
  const pieceOf = piecesOf(tokens as string[], info.invalidUtf8.get("tokenizer.ggml.tokens"));
  const dup = firstDuplicate(tokens.length, pieceOf);
  if (dup !== null) {
    const [firstAt, i] = dup;
    const piece = pieceOf(i);
    const emptyAt = piece === `[EMPTY_${i}]` ? i : piece === `[EMPTY_${firstAt}]` ? firstAt : -1;
    const shown = piece.startsWith("\uD800") ? `the bytes ${Buffer.from(piece.slice(1), "latin1").toString("hex")} (not UTF-8)` : JSON.stringify(piece);
    const what = emptyAt === -1
      ? `${shown} twice, at ids ${firstAt} and ${i}`
      : `an empty piece at id ${emptyAt}, which llama.cpp renames ${JSON.stringify(piece)}, and ${JSON.stringify(piece)} itself at id ${emptyAt === i ? firstAt : i}`;
    fail(`tokenizer.ggml.tokens holds ${what}; llama.cpp aborts on a vocabulary with duplicate pieces, so ${CRAFTED}`);
  }
}

/**
 * Each token's piece as llama.cpp keys it: it reads a piece as a C string, so a NUL ends it, and an empty
 * piece becomes "[EMPTY_<id>]". A piece whose bytes are not valid UTF-8 is keyed by its exact bytes behind a
 * lone surrogate, which no decoded UTF-8 text contains, so it equals only the same bytes.
 */
function piecesOf(tokens: readonly string[], invalid: ReadonlyMap<number, string> = new Map()): (i: number) => string {
  const cString = (s: string) => {
    const nul = s.indexOf("\0");
    return nul === -1 ? s : s.slice(0, nul);
  };
  return (i) => {
    const exact = invalid.get(i);
    const piece = cString(exact ?? tokens[i]);
    if (piece === "") return `[EMPTY_${i}]`;
    return exact === undefined ? piece : `\uD800${piece}`;
  };
}

/**
 * The ids of the first piece that occurs twice, or null. An open-addressing table of ids keyed by an FNV-1a
 * hash of the piece, so 150k tokens cost one pass and one Int32Array, about 3x faster than a Set of strings.
 */
function firstDuplicate(count: number, pieceOf: (i: number) => string): [number, number] | null {
  let size = 16;
  while (size < count * 2) size *= 2;
  const table = new Int32Array(size).fill(-1);
  const mask = size - 1;
  for (let i = 0; i < count; i++) {
    const piece = pieceOf(i);
    let h = 0x811c9dc5;
    for (let k = 0; k < piece.length; k++) h = Math.imul(h ^ piece.charCodeAt(k), 0x01000193);
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const j = table[slot];
      if (j === -1) {
        table[slot] = i;
        break;
      }
      if (pieceOf(j) === piece) return [j, i];
    }
  }
  return null;
}

/** All checks, cheapest first. Throws GgufFormatError naming the key or tensor at fault. */
export function checkModel(info: GgufInfo): void {
  checkTensorAlignment(info);
  checkTensorTypes(info);
  checkHyperparameters(info);
  checkVocabulary(info);
}
