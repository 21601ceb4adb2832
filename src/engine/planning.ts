import { KekahydeError, isKekahydeError } from "../errors.ts";
import type { DraftPlan, LoadSettings, ModelPlan } from "../domain/models.ts";
import { estimateModelMemory } from "../gguf/memory.ts";
import type { GgufInfo } from "../gguf/reader.ts";
import { inspectModelFile, type ModelFilePolicy } from "./modelFile.ts";

/** What planning a load needs to know of the daemon and the machine (no inference library). */
export interface PlanningOptions {
  policy: ModelFilePolicy;
  /** Context size per sequence when a load does not say; capped at the model's trained length. */
  contextSize: number;
  /** Sequences per model when a load does not say. */
  parallel?: number;
  /** Whether a load with these settings puts layers on a GPU. */
  onGpu(settings: LoadSettings): Promise<boolean>;
  /** Memory free for a new model now: VRAM when its layers go to a GPU, else RAM. */
  freeBytes(onGpu: boolean): Promise<number>;
}

/** The context a load gets: the requested (or default) size, capped at the model's trained length. */
function contextFor(gguf: GgufInfo, settings: LoadSettings, defaultSize: number): number {
  const requested = settings.contextSize ?? defaultSize;
  return Math.max(16, Math.min(requested, gguf.contextLength || requested));
}

/** As llama.cpp's speculative example allows: vocabularies may differ in size by this many tokens at most. */
const MAX_VOCABULARY_DIFFERENCE = 128;

/**
 * Why a draft model cannot draft for a target, or null when it can: both tokenize alike (same tokenizer, same
 * special tokens) and their tokens have the same text over the range they share (the draft's token ids are
 * the target's), as llama.cpp's own check for `--model-draft` asks.
 */
function draftMismatch(target: GgufInfo, draft: GgufInfo): string | null {
  const get = (g: GgufInfo, key: string) => g.metadata.get(key);
  if (get(target, "tokenizer.ggml.model") !== get(draft, "tokenizer.ggml.model")) {
    return `its tokenizer is "${String(get(draft, "tokenizer.ggml.model"))}", the model's "${String(get(target, "tokenizer.ggml.model"))}"`;
  }
  for (const key of ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]) {
    if (get(target, key) !== get(draft, key)) return `its ${key} is ${String(get(draft, key))}, the model's ${String(get(target, key))}`;
  }
  const a = get(target, "tokenizer.ggml.tokens");
  const b = get(draft, "tokenizer.ggml.tokens");
  if (!Array.isArray(a) || !Array.isArray(b)) return "one of the two files has no token list";
  const [sizeA, sizeB] = [target.vocabulary.tokens, draft.vocabulary.tokens];
  if (Math.abs(sizeA - sizeB) > MAX_VOCABULARY_DIFFERENCE) return `its vocabulary has ${sizeB} tokens, the model's ${sizeA}`;
  // The reader keeps the first 512Ki tokens of a vocabulary (every real one whole): those are compared.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `token ${i} is ${JSON.stringify(b[i])} in it but ${JSON.stringify(a[i])} in the model`;
  return null;
}

/** The draft model's plan: its file checked as the model's is (same folders), its vocabulary against the model's. */
async function planDraft(rawPath: string, target: GgufInfo, targetPath: string, contextSize: number, sequences: number, policy: ModelFilePolicy): Promise<DraftPlan> {
  let inspected: Awaited<ReturnType<typeof inspectModelFile>>;
  try {
    inspected = await inspectModelFile(rawPath, policy);
  } catch (e) {
    if (!isKekahydeError(e)) throw e;
    throw new KekahydeError(e.code, `"draft_model": ${e.message}`, { ...e.details, field: "draft_model" });
  }
  const { path, gguf, mtimeMs } = inspected;
  const mismatch = draftMismatch(target, gguf);
  if (mismatch) {
    throw new KekahydeError(
      "BAD_REQUEST",
      `"draft_model" ${path} cannot draft for ${targetPath}: ${mismatch}. A draft model must share the model's vocabulary (a smaller model of the same family, e.g. Qwen2.5-0.5B for Qwen2.5-7B); or leave "draft_model" out and send "speculative": "lookup" to draft from the prompt instead.`,
      { field: "draft_model", path, model: targetPath },
    );
  }
  const draftContext = contextFor(gguf, { contextSize }, contextSize);
  const need = estimateModelMemory(gguf, draftContext * sequences);
  return { path, name: gguf.name, fileSize: gguf.fileSize, mtimeMs, contextSize: draftContext, bytes: need.total, weightsBytes: need.weights, kvCacheBytes: need.kvCache };
}

/**
 * Reads and checks a model file once and plans its load: what the engine will create and what it will take
 * in memory. Pure JavaScript over the bounded GGUF reader, so the daemon can plan without loading any native
 * library; the plan then travels with the load.
 */
export async function planModel(rawPath: string, settings: LoadSettings, options: PlanningOptions): Promise<ModelPlan> {
  const { path, gguf, mtimeMs } = await inspectModelFile(rawPath, options.policy);
  const contextSize = contextFor(gguf, settings, options.contextSize);
  const sequences = Math.max(1, settings.parallel ?? options.parallel ?? 1);
  // Every sequence has its own KV cache of the context size.
  const need = estimateModelMemory(gguf, contextSize * sequences);
  const onGpu = await options.onGpu(settings);
  if (settings.draftModel !== undefined && settings.speculative === "lookup") {
    throw new KekahydeError("BAD_REQUEST", '"speculative": "lookup" drafts without a draft model: send either "draft_model" or "speculative": "lookup", not both.', { field: "speculative" });
  }
  const draft = settings.draftModel !== undefined ? await planDraft(settings.draftModel, gguf, path, contextSize, sequences, options.policy) : undefined;
  return {
    path,
    name: gguf.name,
    architecture: gguf.architecture,
    fileSize: gguf.fileSize,
    mtimeMs,
    trainContextSize: gguf.contextLength,
    vocabularySize: gguf.vocabulary.tokens,
    contextSize,
    sequences,
    ...(settings.gpuLayers !== undefined && { gpuLayers: settings.gpuLayers }),
    ...(settings.threads !== undefined && { threads: settings.threads }),
    // The draft model loads with the model, in the same engine: its memory is the model's.
    bytes: need.total + (draft?.bytes ?? 0),
    weightsBytes: need.weights + (draft?.weightsBytes ?? 0),
    kvCacheBytes: need.kvCache + (draft?.kvCacheBytes ?? 0),
    freeBytes: await options.freeBytes(onGpu),
    onGpu,
    ...(draft ? { speculative: "draft" as const, draft } : settings.speculative === "lookup" ? { speculative: "lookup" as const } : {}),
  };
}
