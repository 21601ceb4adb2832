import type { LoadSettings, ModelPlan } from "../domain/models.ts";
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

const vocabularyOf = (gguf: GgufInfo): number => {
  const tokens = gguf.metadata.get("tokenizer.ggml.tokens");
  return Array.isArray(tokens) ? tokens.length : 0;
};

/** The context a load gets: the requested (or default) size, capped at the model's trained length. */
export function contextFor(gguf: GgufInfo, settings: LoadSettings, defaultSize: number): number {
  const requested = settings.contextSize ?? defaultSize;
  return Math.max(16, Math.min(requested, gguf.contextLength || requested));
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
  return {
    path,
    name: gguf.name,
    architecture: gguf.architecture,
    fileSize: gguf.fileSize,
    mtimeMs,
    trainContextSize: gguf.contextLength,
    vocabularySize: vocabularyOf(gguf),
    contextSize,
    sequences,
    ...(settings.gpuLayers !== undefined && { gpuLayers: settings.gpuLayers }),
    ...(settings.threads !== undefined && { threads: settings.threads }),
    bytes: need.total,
    weightsBytes: need.weights,
    kvCacheBytes: need.kvCache,
    freeBytes: await options.freeBytes(onGpu),
    onGpu,
  };
}
