import { GgmlType } from "./format.ts";
import { baseVocabulary, llamaMetadata, SPACE_PIECE } from "./llamaMetadata.ts";
import type { LlamaShape } from "./randomModel.ts";
import { str, u32, writeGguf, type GgufSpec, type GgufTensorSpec } from "./writer.ts";

/**
 * A character-level llama whose greedy output is known in advance.
 *
 * Every token embeds as a one-hot vector; attention and feed-forward weights are all zero, so each layer adds
 * nothing and the residual stream at a position is just the current token's one-hot vector. The output head
 * maps that vector to a single large logit on the "next" character, so under greedy sampling the model
 * continues letters and digits cyclically ("abc" → "defg…", "z" → "a", "9" → "0"), stops (end of sequence)
 * after ".", and answers a space after other punctuation. The text it writes can therefore be asserted
 * exactly, while node-llama-cpp still runs a real llama graph over a real file.
 *
 * The zero matrices still cost real compute, so the same recipe with wider or deeper shapes makes a slow
 * model for cancellation tests without changing the expected text.
 */

const EOS = 2;
const IM_END = "<|im_end|>";

/**
 * The model carries the common ChatML template, so node-llama-cpp resolves a real chat wrapper for it. A chat
 * prompt ends with "assistant\n"; "\n" is a byte token, which the model answers with a space, so a chat
 * reply always reads " abcdefgh…" whatever the question. Only the last token matters to this model.
 */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

export interface CharVocab {
  tokens: string[];
  types: number[];
  /** The greedy successor of each token id. */
  next: number[];
}

function cycleNext(ch: string, step: number): string | null {
  const ranges: Array<[string, string]> = [["a", "z"], ["A", "Z"], ["0", "9"]];
  for (const [lo, hi] of ranges) {
    if (ch >= lo && ch <= hi) {
      const size = hi.charCodeAt(0) - lo.charCodeAt(0) + 1;
      return String.fromCharCode(lo.charCodeAt(0) + ((ch.charCodeAt(0) - lo.charCodeAt(0) + step) % size));
    }
  }
  return null;
}

/**
 * The successor character of `ch` in the model's text, or null when the model ends the sequence. `step` is
 * how far each letter or digit advances (1: "abc…", 2: "ace…"), so two models can write different texts.
 */
export function nextChar(ch: string, step = 1): string | null {
  if (ch === ".") return null;
  if (ch === " ") return "a";
  return cycleNext(ch, step) ?? " ";
}

export function buildCharVocab(step = 1): CharVocab {
  const { tokens, types } = baseVocabulary(["<|im_start|>", IM_END]);
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const spaceId = idOf.get(SPACE_PIECE)!;
  const next = tokens.map((piece, id) => {
    // Control and byte pieces come before the space piece; the model answers them with a space.
    if (id < spaceId) return spaceId;
    const ch = piece === SPACE_PIECE ? " " : piece;
    const succ = nextChar(ch, step);
    if (succ === null) return EOS;
    return idOf.get(succ === " " ? SPACE_PIECE : succ)!;
  });
  return { tokens, types, next };
}

/** The exact text the char model writes greedily as a chat reply (any question), at most `maxTokens` characters. */
export function expectedChatReply(maxTokens: number, step = 1): string {
  return (" " + expectedContinuation(" ", Math.max(0, maxTokens - 1), step)).slice(0, maxTokens);
}

/** The exact text the char model writes greedily after `prompt`, at most `maxTokens` characters. */
export function expectedContinuation(prompt: string, maxTokens: number, step = 1): string {
  let out = "";
  let last = prompt.length > 0 ? prompt[prompt.length - 1] : " ";
  if (last.charCodeAt(0) > 0x7e || (last.charCodeAt(0) < 0x21 && last !== " ")) last = "\0"; // byte tokens answer a space
  while (out.length < maxTokens) {
    const succ = last === "\0" ? " " : nextChar(last, step);
    if (succ === null) break;
    out += succ;
    last = succ;
  }
  return out;
}

/** A llama shape whose vocabulary is the char vocabulary; embeddingLength must be at least its size (356). */
export interface CharModelShape extends Omit<LlamaShape, "vocabSize"> {
  /** Type of the (zero) attention and feed-forward matrices: F32 or F16. */
  layerType: GgmlType.F32 | GgmlType.F16;
  /**
   * Weight of the output head (default 1): the winning logit is about sqrt(embeddingLength) times this. At 1
   * the next character wins by ~20 nats, so even sampling is deterministic; small values leave real choice.
   */
  outputScale?: number;
  /** How far each letter or digit advances (default 1). */
  step?: number;
}

/** ~1 MB, generates in well under a millisecond per token: for exact-text tests. */
export const TINY_CHAR_MODEL: CharModelShape = {
  name: "kekahyde-char-tiny",
  embeddingLength: 384,
  blockCount: 2,
  feedForwardLength: 512,
  headCount: 6,
  headCountKv: 2,
  contextLength: 4096,
  layerType: GgmlType.F16,
};

/** Same greedy text, but a head so soft (top logit ~3) that sampling with a temperature really varies. */
export const SOFT_CHAR_MODEL: CharModelShape = { ...TINY_CHAR_MODEL, name: "kekahyde-char-soft", outputScale: 0.15 };

/** The tiny model's twin that skips every other letter (" acegi…"): a second model with a different text. */
export const SKIP_CHAR_MODEL: CharModelShape = { ...TINY_CHAR_MODEL, name: "kekahyde-char-skip", step: 2 };

/** Same text, ~10x the work per token: generation runs long enough to be stopped. */
export const SLOW_CHAR_MODEL: CharModelShape = {
  name: "kekahyde-char-slow",
  embeddingLength: 1024,
  blockCount: 8,
  feedForwardLength: 2816,
  headCount: 8,
  headCountKv: 8,
  contextLength: 8192,
  layerType: GgmlType.F16,
};

const CHUNK = 1 << 20;

function* zeroBytes(total: number): Iterable<Uint8Array> {
  const chunk = new Uint8Array(Math.min(CHUNK, total));
  for (let left = total; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

function* f32Rows(rows: number, rowLength: number, fill: (row: number, out: Float32Array) => void): Iterable<Uint8Array> {
  const out = new Float32Array(rowLength);
  for (let r = 0; r < rows; r++) {
    out.fill(0);
    fill(r, out);
    yield new Uint8Array(out.buffer.slice(0));
  }
}

function ones(n: number): () => Iterable<Uint8Array> {
  return () => [new Uint8Array(new Float32Array(n).fill(1).buffer)];
}

function zeroTensor(name: string, dims: number[], type: GgmlType.F32 | GgmlType.F16): GgufTensorSpec {
  const bytes = dims.reduce((a, b) => a * b, 1) * (type === GgmlType.F32 ? 4 : 2);
  return { name, dims, type, data: () => zeroBytes(bytes) };
}

export function charModelSpec(shape: CharModelShape): GgufSpec {
  const vocab = buildCharVocab(shape.step ?? 1);
  const nVocab = vocab.tokens.length;
  const nEmbd = shape.embeddingLength;
  if (nEmbd < nVocab) throw new Error(`embeddingLength ${nEmbd} must be >= vocabulary size ${nVocab}`);
  if (nEmbd % shape.headCount !== 0) throw new Error("embeddingLength must be a multiple of headCount");
  const headDim = nEmbd / shape.headCount;
  const nEmbdKv = headDim * shape.headCountKv;

  const tensors: GgufTensorSpec[] = [
    {
      name: "token_embd.weight",
      dims: [nEmbd, nVocab],
      type: GgmlType.F32,
      data: () => f32Rows(nVocab, nEmbd, (token, row) => void (row[token] = 1)),
    },
  ];
  for (let l = 0; l < shape.blockCount; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: `${p}attn_norm.weight`, dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
      zeroTensor(`${p}attn_q.weight`, [nEmbd, nEmbd], shape.layerType),
      zeroTensor(`${p}attn_k.weight`, [nEmbd, nEmbdKv], shape.layerType),
      zeroTensor(`${p}attn_v.weight`, [nEmbd, nEmbdKv], shape.layerType),
      zeroTensor(`${p}attn_output.weight`, [nEmbd, nEmbd], shape.layerType),
      { name: `${p}ffn_norm.weight`, dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
      zeroTensor(`${p}ffn_gate.weight`, [nEmbd, shape.feedForwardLength], shape.layerType),
      zeroTensor(`${p}ffn_down.weight`, [shape.feedForwardLength, nEmbd], shape.layerType),
      zeroTensor(`${p}ffn_up.weight`, [nEmbd, shape.feedForwardLength], shape.layerType),
    );
  }
  tensors.push(
    { name: "output_norm.weight", dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
    {
      name: "output.weight",
      dims: [nEmbd, nVocab],
      type: GgmlType.F32,
      // Row v holds the logit of token v: a 1 at every input token whose successor is v.
      data: () =>
        f32Rows(nVocab, nEmbd, (v, row) => {
          vocab.next.forEach((succ, input) => {
            if (succ === v) row[input] = shape.outputScale ?? 1;
          });
        }),
    },
  );

  return {
    metadata: llamaMetadata({
      ...shape,
      fileType: shape.layerType === GgmlType.F16 ? 1 : 0,
      tokens: vocab.tokens,
      tokenTypes: vocab.types,
      extra: [
        ["tokenizer.ggml.eot_token_id", u32(vocab.tokens.indexOf(IM_END))],
        ["tokenizer.chat_template", str(CHATML_TEMPLATE)],
      ],
    }),
    tensors,
  };
}

/** Writes the char model to `path`; returns the file size in bytes. */
export function writeCharModel(path: string, shape: CharModelShape = TINY_CHAR_MODEL): Promise<number> {
  return writeGguf(path, charModelSpec(shape));
}
