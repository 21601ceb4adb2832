import { CHATML_TEMPLATE, charModelSpec, TINY_CHAR_MODEL, type CharModelShape } from "../../src/gguf/charModel.ts";
import { GgmlType } from "../../src/gguf/format.ts";
import { encodeGgufHeader, f32, i32Array, str, strArray, tensorSpecBytes, u32, u32Array, writeGguf, type GgufSpec, type GgufValue } from "../../src/gguf/writer.ts";

/**
 * The project's own crafted model files: the valid tiny char model with one fact changed, one file per class
 * of hostile file that is known to kill llama.cpp natively (issue 13), plus a few odd but valid files that must
 * still load. Tests feed them to the bounded check (src/gguf/modelChecks.ts); `scripts/probe-crafted.ts` feeds
 * them to the real engine in a child process to see what it does with each.
 *
 * expected:
 * - "refused": our bounded check refuses it with a reason (without the check, llama.cpp crashes or refuses it);
 * - "crashes-engine": it passes our check and is known to take the engine down (freeze or native crash), so
 *   only a process boundary around the engine can contain it;
 * - "loads": odd but valid; it must pass our check, load and generate.
 */
type CraftedExpectation = "refused" | "crashes-engine" | "loads";

export interface CraftedModel {
  name: string;
  description: string;
  expected: CraftedExpectation;
  /** For "refused": what the refusal must name (the key or tensor at fault). */
  mentions?: RegExp;
  /** The crash only shows in a chat reply (the chat template is rendered), not in a plain completion. */
  chat?: boolean;
  spec(): GgufSpec;
  /** Writes the file; returns its size in bytes. */
  write(path: string): Promise<number>;
}

/** The char model every crafted file starts from: the tiny one with a feed-forward length that 256-element blocks divide. */
export const CRAFTED_BASE: CharModelShape = { ...TINY_CHAR_MODEL, name: "kekahyde-crafted", feedForwardLength: 256 };

const KEY = (k: string) => `llama.${k}`;

/** The spec with `key` set to `value` (replaced in place, or appended), or removed when `value` is null. */
export function withMetadata(spec: GgufSpec, key: string, value: GgufValue | null): GgufSpec {
  const metadata = spec.metadata.filter(([k]) => k !== key);
  if (value !== null) {
    const at = spec.metadata.findIndex(([k]) => k === key);
    metadata.splice(at === -1 ? metadata.length : at, 0, [key, value]);
  }
  return { ...spec, metadata };
}

function* zeros(total: bigint): Iterable<Uint8Array> {
  const chunk = new Uint8Array(1 << 20);
  for (let left = Number(total); left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

/** The spec with tensor `name` stored as `type`: same shape, zero data of the right byte size for that type. */
function withTensorType(spec: GgufSpec, name: string, type: GgmlType): GgufSpec {
  if (!spec.tensors.some((t) => t.name === name)) throw new Error(`no tensor ${name} in the spec`);
  return {
    ...spec,
    tensors: spec.tensors.map((t) => {
      if (t.name !== name) return t;
      const retyped = { ...t, type };
      const bytes = tensorSpecBytes(retyped);
      return { ...retyped, data: () => zeros(bytes) };
    }),
  };
}

/** The spec laid out with `alignment`, which general.alignment says. */
function withAlignment(spec: GgufSpec, alignment: number): GgufSpec {
  return { ...withMetadata(spec, "general.alignment", u32(alignment)), alignment };
}

/** The spec with every attention and feed-forward matrix stored as `type` (zero data). */
function withLayerMatrices(spec: GgufSpec, type: GgmlType): GgufSpec {
  let out = spec;
  for (const t of spec.tensors) if (/^blk\.\d+\.(attn_[qkv]|attn_output|ffn_(gate|up|down))\.weight$/.test(t.name)) out = withTensorType(out, t.name, type);
  return out;
}

/** The spec with token `index` of the vocabulary replaced by `piece`. */
function withToken(spec: GgufSpec, index: number, piece: string): GgufSpec {
  const tokens = [...tokensOf(spec)];
  tokens[index] = piece;
  return withMetadata(spec, "tokenizer.ggml.tokens", strArray(tokens));
}

function tokensOf(spec: GgufSpec): readonly string[] {
  const v = spec.metadata.find(([k]) => k === "tokenizer.ggml.tokens")?.[1];
  if (!v || !("itemType" in v)) throw new Error("the spec has no token list");
  return v.value as readonly string[];
}

/**
 * alignment 1, with general.name lengthened until the header's length is (aligned) or is not (unaligned) a
 * multiple of 32. Every tensor of the char model is a multiple of 32 bytes long, so the header decides
 * whether all the tensor data lands on 32-byte boundaries, which is what ggml needs, or none of it does.
 */
function alignmentOne(spec: GgufSpec, aligned: boolean): GgufSpec {
  let out = withAlignment(spec, 1);
  for (let pad = 0; (encodeGgufHeader(out).header.length % 32 === 0) !== aligned; pad++) {
    if (pad > 32) throw new Error("could not pad the header");
    out = withMetadata(out, "general.name", str(`${CRAFTED_BASE.name}${"-".repeat(pad + 1)}`));
  }
  return out;
}

/** A ChatML template that first runs an empty loop `iterations` times. */
function loopingTemplate(iterations: number, body = ""): string {
  return `{% for i in range(${iterations}) %}${body}{% endfor %}` + CHATML_TEMPLATE;
}

const TOKEN_COUNT = () => tokensOf(charModelSpec(CRAFTED_BASE)).length;

function crafted(
  name: string,
  expected: CraftedExpectation,
  description: string,
  change: (base: GgufSpec) => GgufSpec,
  extra: { mentions?: RegExp; chat?: boolean } = {},
): CraftedModel {
  const spec = () => change(charModelSpec(CRAFTED_BASE));
  return { name, expected, description, ...extra, spec, write: (path) => writeGguf(path, spec()) };
}

const retype = (tensor: string, type: GgmlType, expected: CraftedExpectation = "refused") =>
  crafted(
    `${tensor.replace(/^blk\.\d+\./, "").replace(/\.weight$/, "")}-${GgmlType[type].toLowerCase()}`,
    expected,
    `${tensor} stored as ${GgmlType[type]} with a correct byte size`,
    (s) => withTensorType(s, tensor, type),
    { mentions: new RegExp(tensor.replace(/\./g, "\\.")) },
  );

const setKey = (name: string, key: string, value: GgufValue | null, description: string, expected: CraftedExpectation = "refused") =>
  crafted(name, expected, description, (s) => withMetadata(s, key, value), {
    mentions: expected === "refused" ? new RegExp(key.replace(/\./g, "\\.")) : undefined,
  });

export const CRASH_CLASSES: readonly CraftedModel[] = [
  crafted("valid", "loads", "the crafted base itself: the tiny char model, unchanged", (s) => s),

  // Weight matrices of types ggml-cpu has no matrix kernel for.
  retype("blk.0.attn_q.weight", GgmlType.I32),
  retype("blk.0.attn_q.weight", GgmlType.I8),
  retype("blk.0.attn_q.weight", GgmlType.I64),
  retype("blk.0.attn_q.weight", GgmlType.F64),
  retype("blk.1.attn_k.weight", GgmlType.Q8_1),
  retype("blk.0.ffn_down.weight", GgmlType.Q8_K),
  retype("output.weight", GgmlType.I32),
  retype("output.weight", GgmlType.F64),
  retype("token_embd.weight", GgmlType.I32),
  retype("token_embd.weight", GgmlType.I8),
  retype("token_embd.weight", GgmlType.F64),
  // Norm weights: llama.cpp multiplies F32 activations by them, and ggml-cpu's binary ops only do F32 x F32 there.
  retype("blk.0.attn_norm.weight", GgmlType.Q8_0),
  retype("blk.1.ffn_norm.weight", GgmlType.F16),
  retype("output_norm.weight", GgmlType.BF16),

  crafted("alignment-1-unaligned", "refused", "general.alignment = 1, so tensor data starts off a 32-byte boundary", (s) => alignmentOne(s, false), {
    mentions: /general\.alignment|32-byte/,
  }),

  setKey("head-count-0", KEY("attention.head_count"), u32(0), "llama.attention.head_count = 0"),
  setKey("head-count-kv-0", KEY("attention.head_count_kv"), u32(0), "llama.attention.head_count_kv = 0"),
  setKey("head-count-kv-layer-0", KEY("attention.head_count_kv"), u32Array([2, 0]), "llama.attention.head_count_kv = [2, 0]: no KV heads in layer 1"),
  setKey("feed-forward-length-0", KEY("feed_forward_length"), u32(0), "llama.feed_forward_length = 0"),
  setKey("embedding-length-0", KEY("embedding_length"), u32(0), "llama.embedding_length = 0"),
  setKey("block-count-513", KEY("block_count"), u32(513), "llama.block_count = 513, past llama.cpp's 512-layer limit"),
  setKey("nextn-layers-past-blocks", KEY("nextn_predict_layers"), u32(3), "llama.nextn_predict_layers = 3 in a 2-layer model"),

  crafted("expert-used-over-count", "refused", "llama.expert_used_count = 4 with llama.expert_count = 2", (s) =>
    withMetadata(withMetadata(s, KEY("expert_count"), u32(2)), KEY("expert_used_count"), u32(4)), { mentions: /llama\.expert_used_count/ }),
  setKey("expert-used-without-experts", KEY("expert_used_count"), u32(2), "llama.expert_used_count = 2 and no llama.expert_count"),
  setKey("experts-none-used", KEY("expert_count"), u32(4), "llama.expert_count = 4 and no llama.expert_used_count (0 experts used)"),

  setKey("rms-epsilon-nan", KEY("attention.layer_norm_rms_epsilon"), f32(NaN), "llama.attention.layer_norm_rms_epsilon = NaN"),
  setKey("rms-epsilon-negative", KEY("attention.layer_norm_rms_epsilon"), f32(-1e-5), "llama.attention.layer_norm_rms_epsilon = -1e-5"),
  setKey("rms-epsilon-infinite", KEY("attention.layer_norm_rms_epsilon"), f32(Infinity), "llama.attention.layer_norm_rms_epsilon = +Infinity"),
  setKey("rope-scaling-unknown", KEY("rope.scaling.type"), str("bogus"), "llama.rope.scaling.type = \"bogus\""),

  setKey("tokenizer-none", "tokenizer.ggml.model", str("none"), "tokenizer.ggml.model = \"none\" (no vocabulary)"),
  setKey("tokenizer-no-vocab", "tokenizer.ggml.model", str("no_vocab"), "tokenizer.ggml.model = \"no_vocab\" (no vocabulary)"),
  setKey("tokenizer-unknown", "tokenizer.ggml.model", str("sentencepiece"), "tokenizer.ggml.model = \"sentencepiece\", a name llama.cpp does not know"),
  crafted("vocab-all-same", "refused", "every entry of tokenizer.ggml.tokens is \"a\"", (s) => withMetadata(s, "tokenizer.ggml.tokens", strArray(new Array(TOKEN_COUNT()).fill("a"))), {
    mentions: /tokenizer\.ggml\.tokens/,
  }),
  crafted("vocab-duplicate-pair", "refused", "token \"b\" replaced by a second \"a\"", (s) => withToken(s, tokensOf(s).indexOf("b"), "a"), {
    mentions: /tokenizer\.ggml\.tokens/,
  }),
  crafted("vocab-empty", "refused", "tokenizer.ggml.tokens is an empty list", (s) => withMetadata(s, "tokenizer.ggml.tokens", strArray([])), {
    mentions: /tokenizer\.ggml\.tokens/,
  }),
  crafted(
    "vocab-empty-collides",
    "refused",
    "an empty token next to a token spelled \"[EMPTY_i]\", the name llama.cpp gives empty tokens",
    (s) => {
      const tokens = tokensOf(s);
      const at = tokens.indexOf("~");
      return withToken(withToken(s, at, ""), tokens.indexOf("}"), `[EMPTY_${at}]`);
    },
    { mentions: /tokenizer\.ggml\.tokens/ },
  ),

  // Chat templates run in JavaScript (node-llama-cpp renders them with @huggingface/jinja) on the engine's thread.
  crafted("chat-template-loop-2m", "crashes-engine", "tokenizer.chat_template loops two million times before the ChatML text", (s) =>
    withMetadata(s, "tokenizer.chat_template", str(loopingTemplate(2_000_000))), { chat: true }),
  crafted("chat-template-loop-300m", "crashes-engine", "tokenizer.chat_template loops 300 million times before the ChatML text", (s) =>
    withMetadata(s, "tokenizer.chat_template", str(loopingTemplate(300_000_000))), { chat: true }),

  // Odd but valid.
  crafted("alignment-64", "loads", "general.alignment = 64", (s) => withAlignment(s, 64)),
  crafted("alignment-1-aligned", "loads", "general.alignment = 1, but the header's length keeps every tensor on a 32-byte boundary", (s) =>
    alignmentOne(s, true)),
  crafted("layers-bf16", "loads", "attention and feed-forward matrices stored as BF16", (s) => withLayerMatrices(s, GgmlType.BF16)),
  crafted("layers-q8_0", "loads", "attention and feed-forward matrices stored as Q8_0", (s) => withLayerMatrices(s, GgmlType.Q8_0)),
  crafted("token-embd-q8_0", "loads", "token_embd.weight stored as Q8_0", (s) => withTensorType(s, "token_embd.weight", GgmlType.Q8_0)),
  setKey("head-count-kv-per-layer", KEY("attention.head_count_kv"), i32Array([2, 2]), "llama.attention.head_count_kv = [2, 2], one entry a layer", "loads"),
  crafted("experts-zero", "loads", "llama.expert_count = 0 and llama.expert_used_count = 0, written out", (s) =>
    withMetadata(withMetadata(s, KEY("expert_count"), u32(0)), KEY("expert_used_count"), u32(0))),
  setKey("rms-epsilon-zero", KEY("attention.layer_norm_rms_epsilon"), f32(0), "llama.attention.layer_norm_rms_epsilon = 0 (ggml allows eps >= 0)", "loads"),
  setKey("rope-scaling-linear", KEY("rope.scaling.type"), str("linear"), "llama.rope.scaling.type = \"linear\"", "loads"),
  crafted("vocab-one-empty-token", "loads", "token \"~\" is an empty string (llama.cpp renames it \"[EMPTY_i]\")", (s) => withToken(s, tokensOf(s).indexOf("~"), "")),
];
