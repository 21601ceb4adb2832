import { GgmlType } from "../../src/gguf/format.ts";
import { baseVocabulary, llamaMetadata, SPACE_PIECE } from "../../src/gguf/llamaMetadata.ts";
import { randomLlamaSpec, type LlamaShape } from "../../src/gguf/randomModel.ts";
import { str, strArray, u32, writeGguf, type GgufSpec, type GgufTensorSpec, type GgufValue } from "../../src/gguf/writer.ts";

/**
 * Generated models for the jobs other than generation: an embedding model and a reranker, both small enough
 * for tests and both real GGUF files that llama.cpp runs through its real graphs.
 *
 * llama.cpp's pooling types (`<arch>.pooling_type`, enum llama_pooling_type).
 */
const POOLING = { none: 0, mean: 1, cls: 2, last: 3, rank: 4 } as const;

/**
 * An embedding model: a small llama with seeded random weights (so its vectors depend on every token and on
 * their order, as a trained model's do) and `llama.pooling_type` = mean, so llama.cpp averages the last
 * layer over the input's tokens. Its vectors mean nothing; they are only what llama.cpp computes, which is
 * what tests compare the daemon against.
 */
export const EMBEDDING_MODEL_SHAPE: LlamaShape = {
  name: "kekahyde-embed-tiny",
  embeddingLength: 64,
  blockCount: 2,
  feedForwardLength: 128,
  headCount: 4,
  headCountKv: 2,
  // Short, so tests can pass an input longer than the whole context.
  contextLength: 256,
  vocabSize: baseVocabulary().tokens.length,
};

function embeddingModelSpec(shape: LlamaShape = EMBEDDING_MODEL_SHAPE, pooling: number = POOLING.mean): GgufSpec {
  const spec = randomLlamaSpec(shape, "F16", 7);
  return {
    ...spec,
    // randomLlamaSpec names the file after its weight type; this one keeps its own name.
    metadata: [...spec.metadata.map(([k, v]) => [k, k === "general.name" ? str(shape.name) : v] as const), ["llama.pooling_type", u32(pooling)]],
  };
}

export function writeEmbeddingModel(path: string, shape: LlamaShape = EMBEDDING_MODEL_SHAPE, pooling: number = POOLING.mean): Promise<number> {
  return writeGguf(path, embeddingModelSpec(shape, pooling));
}

/**
 * A reranker whose scores follow a rule known in advance, for the ranking route.
 *
 * It is a Qwen3-architecture model, because llama.cpp reads a reranking head (`cls.output.weight`) only for
 * the encoder families (bert, jina-bert, nomic-bert, modern-bert, neo-bert) and qwen3/qwen3vl, and qwen3 is a
 * llama with two extra norms. Qwen3 rerankers are scored on the last token: llama.cpp's RANK pooling takes the
 * last position's hidden state, applies the head (one row per `classifier.output_labels` entry, here "yes" and
 * "no") and a softmax, and node-llama-cpp reports the first value, P(yes), as the score.
 *
 * As in the char models (charModel.ts), every token embeds as a one-hot vector and every attention and
 * feed-forward weight is zero, so the last position's hidden state is the one-hot vector of the last token
 * (scaled by the final RMS norm). The rerank template (`tokenizer.chat_template.rerank`, "{query}\n{document}")
 * puts the document last, so the score depends on the document's last character only:
 *
 *   score = sigmoid(logit), logit = (place of the last letter in the alphabet, a = 0 … z = 25) − 12.5, halved
 *
 * from 0.002 for a document ending in "a" to 0.998 for one ending in "z" (either case); 0.5 for anything that
 * is not a letter. A toy rule, but one that ranks deterministically through a real reranking graph.
 */
export interface RerankerShape {
  name: string;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  contextLength: number;
}

export const RERANK_MODEL_SHAPE: RerankerShape = {
  name: "kekahyde-rerank-tiny",
  embeddingLength: 384,
  blockCount: 1,
  feedForwardLength: 64,
  headCount: 6,
  headCountKv: 2,
  contextLength: 512,
};

const RERANK_TEMPLATE = "{query}\n{document}";
const RMS_EPS = 1e-5;

/** The logit the reranker gives a document (before the sigmoid): by its last character. */
function rerankLogit(document: string): number {
  const last = document.at(-1)?.toLowerCase() ?? "";
  if (last < "a" || last > "z" || last.length !== 1) return 0;
  return (last.charCodeAt(0) - "a".charCodeAt(0) - 12.5) / 2;
}

/** The relevance score the reranker gives `document` (for any query). */
export function expectedRerankScore(document: string): number {
  return 1 / (1 + Math.exp(-rerankLogit(document)));
}

function f32Tensor(name: string, dims: number[], fill: (out: Float32Array) => void): GgufTensorSpec {
  return {
    name,
    dims,
    type: GgmlType.F32,
    data: () => {
      const out = new Float32Array(dims.reduce((a, b) => a * b, 1));
      fill(out);
      return [new Uint8Array(out.buffer)];
    },
  };
}

const zeros = (name: string, dims: number[]): GgufTensorSpec => f32Tensor(name, dims, () => {});
const ones = (name: string, n: number): GgufTensorSpec => f32Tensor(name, [n], (out) => out.fill(1));

function rerankModelSpec(shape: RerankerShape = RERANK_MODEL_SHAPE): GgufSpec {
  const { tokens, types } = baseVocabulary();
  const nVocab = tokens.length;
  const nEmbd = shape.embeddingLength;
  if (nEmbd < nVocab) throw new Error(`embeddingLength ${nEmbd} must be >= vocabulary size ${nVocab}`);
  const headDim = nEmbd / shape.headCount;
  const nEmbdKv = headDim * shape.headCountKv;
  // The final RMS norm scales a one-hot vector to 1/sqrt(1/n + eps); the head undoes that, so that the "yes"
  // logit is exactly rerankLogit of the token's character.
  const normed = 1 / Math.sqrt(1 / nEmbd + RMS_EPS);

  const tensors: GgufTensorSpec[] = [
    f32Tensor("token_embd.weight", [nEmbd, nVocab], (out) => {
      for (let t = 0; t < nVocab; t++) out[t * nEmbd + t] = 1;
    }),
  ];
  for (let l = 0; l < shape.blockCount; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      ones(`${p}attn_norm.weight`, nEmbd),
      zeros(`${p}attn_q.weight`, [nEmbd, nEmbd]),
      zeros(`${p}attn_k.weight`, [nEmbd, nEmbdKv]),
      zeros(`${p}attn_v.weight`, [nEmbd, nEmbdKv]),
      zeros(`${p}attn_output.weight`, [nEmbd, nEmbd]),
      ones(`${p}attn_q_norm.weight`, headDim),
      ones(`${p}attn_k_norm.weight`, headDim),
      ones(`${p}ffn_norm.weight`, nEmbd),
      zeros(`${p}ffn_gate.weight`, [nEmbd, shape.feedForwardLength]),
      zeros(`${p}ffn_down.weight`, [shape.feedForwardLength, nEmbd]),
      zeros(`${p}ffn_up.weight`, [nEmbd, shape.feedForwardLength]),
    );
  }
  tensors.push(
    ones("output_norm.weight", nEmbd),
    // Row 0 ("yes"): each token's logit; row 1 ("no"): 0. The softmax of the two is sigmoid(yes).
    f32Tensor("cls.output.weight", [nEmbd, 2], (out) => {
      tokens.forEach((piece, t) => {
        const ch = piece === SPACE_PIECE ? " " : piece.length === 1 ? piece : "";
        out[t] = rerankLogit(ch) / normed;
      });
    }),
  );

  const metadata = llamaMetadata({ ...shape, fileType: 0, tokens, tokenTypes: types }).map(([k, v]): readonly [string, GgufValue] => [
    k === "general.architecture" ? k : k.replace(/^llama\./, "qwen3."),
    k === "general.architecture" ? str("qwen3") : v,
  ]);
  return {
    metadata: [
      ...metadata,
      ["qwen3.pooling_type", u32(POOLING.rank)],
      ["qwen3.classifier.output_labels", strArray(["yes", "no"])],
      ["tokenizer.chat_template.rerank", str(RERANK_TEMPLATE)],
    ],
    tensors,
  };
}

export function writeRerankModel(path: string, shape: RerankerShape = RERANK_MODEL_SHAPE): Promise<number> {
  return writeGguf(path, rerankModelSpec(shape));
}
