import { basename } from "node:path";

/** Models as the daemon plans, loads and describes them: shared by the routes, the machines and the engine. */

/** `--gpu`: use a GPU if the engine finds one, or CPU only. */
export type GpuMode = "auto" | "off";

/** llama.cpp's flash attention: "auto" (its own default: on where the backend supports it), "on" or "off". */
export type FlashAttentionMode = "auto" | "on" | "off";

/** `--max-memory`: a number of bytes, or a fraction of the memory free for models at each load. */
export type MemoryBudget = { bytes: number } | { fraction: number };

/** Per-load settings; each left out takes the daemon's default. */
export interface LoadSettings {
  contextSize?: number;
  gpuLayers?: number;
  threads?: number;
  /** Context sequences, one per parallel generation (default 1). */
  parallel?: number;
  /** Speculative decoding with this draft model (a .gguf of the same vocabulary): its path. */
  draftModel?: string;
  /** Speculative decoding without a draft model: "lookup" drafts from n-grams of the prompt and text so far. */
  speculative?: "lookup";
}

/** How a loaded model speculates (docs/speculative.md): with a draft model, or by prompt lookup. */
type SpeculativeMode = "draft" | "lookup";

/** A draft model's part of a plan: read and checked with the main model's file, counted in its memory. */
export interface DraftPlan {
  path: string;
  name: string | null;
  fileSize: number;
  mtimeMs: number;
  /** Tokens of context per sequence of the draft (the target's, capped at the draft's trained length). */
  contextSize: number;
  /** Estimated memory of the draft alone (also included in the plan's `bytes`). */
  bytes: number;
  weightsBytes: number;
  kvCacheBytes: number;
}

/**
 * Everything a load will take, known before loading: read once from the file's GGUF header (and the
 * machine) when the load is admitted, then carried with the load, so the file is not inspected again.
 */
export interface ModelPlan {
  /** The real path that will be loaded (symlinks resolved). */
  path: string;
  /** `general.name`, when the file has one. */
  name: string | null;
  architecture: string;
  fileSize: number;
  /** The file's modification time: with its size and path, what identifies this file's contents. */
  mtimeMs: number;
  /** The context length the model was trained with. */
  trainContextSize: number | null;
  /** Tokens in the model's vocabulary. */
  vocabularySize: number;
  /** Tokens of context per sequence: the requested size capped at the trained length. */
  contextSize: number;
  /** Context sequences: generations that may run at once. */
  sequences: number;
  gpuLayers?: number;
  threads?: number;
  /** Estimated memory: weights + KV cache for every sequence + working buffers. */
  bytes: number;
  /** The parts of that estimate a refusal names. */
  weightsBytes: number;
  kvCacheBytes: number;
  /** Memory free for models now (RAM, or VRAM when layers go to a GPU), loaded models not counted. */
  freeBytes: number;
  /** Whether its layers go to a GPU (then llama.cpp sizes VRAM itself and only the budget applies). */
  onGpu: boolean;
  /** Speculative decoding, when the load asks for it; `draft` then says what the draft model takes. */
  speculative?: SpeculativeMode;
  draft?: DraftPlan;
}

export interface ModelInfo {
  path: string;
  name: string;
  architecture: string;
  size_bytes: number;
  context_size: number;
  /** The context length the model was trained with, from its GGUF metadata. */
  train_context_size: number | null;
  threads: number;
  /** What node-llama-cpp runs on: "cuda", "vulkan", "metal", or false for CPU only. */
  gpu: string | false;
  gpu_layers: number;
  /**
   * Which llama.cpp binary runs it: node-llama-cpp's "prebuilt" one, or a "localBuild" from
   * `npm run build:engine` (OpenMP threads; see docs/performance.md).
   */
  engine_build: string;
  /** Flash attention as the model's context was created with it (`--flash-attention`). */
  flash_attention: FlashAttentionMode;
  /** Generations that may run at once, each in its own context sequence of context_size tokens. */
  parallel: number;
  /** The process that runs this model's engine (its own engine process; the daemon never loads llama.cpp). */
  engine_pid: number;
  /** Speculative decoding of greedy requests: "draft" (with `draft_model`) or "lookup"; absent: none. */
  speculative?: SpeculativeMode;
  /** The draft model, with `speculative: "draft"`. */
  draft_model?: { path: string; name: string; size_bytes: number };
}

/** A model's default name: its file name without `.gguf`. */
export const defaultModelName = (path: string): string => basename(path).replace(/\.gguf$/i, "");
