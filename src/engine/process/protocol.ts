import type { ErrorCode } from "../../errors.ts";
import type { GenerationProgress, GenerationRequest } from "../../domain/generation.ts";
import type { JobResult, Work } from "../../domain/jobs.ts";
import type { FlashAttentionMode, GpuMode, ModelInfo, ModelPlan } from "../../domain/models.ts";

/**
 * What the daemon and an engine process say to each other over Node's IPC channel. One engine process runs
 * node-llama-cpp for one model; the daemon never loads the native library itself.
 */

/** How the daemon starts an engine process (its first argument, as JSON). */
export interface EngineProcessOptions {
  gpu: GpuMode;
  threads: number;
  contextSize: number;
  flashAttention: FlashAttentionMode;
  parallel: number;
}

export interface SerializedError {
  code: ErrorCode;
  message: string;
  details: Record<string, unknown>;
}

export type ToEngine =
  /** Start the library and say what it runs on (the spare process does this ahead of any load). */
  | { type: "probe" }
  | { type: "load"; plan: ModelPlan }
  | { type: "generate"; id: number; request: GenerationRequest }
  /** A job other than generation: embeddings, ranking, tokens. */
  | { type: "work"; id: number; work: Exclude<Work, { kind: "generate" }> }
  | { type: "abort"; id: number }
  /** Free the model and exit. */
  | { type: "dispose" };

export type FromEngine =
  | { type: "ready"; gpu: string | false; vramFree: number | null }
  | { type: "probeFailed"; error: SerializedError }
  | { type: "loadProgress"; progress: number }
  | { type: "loaded"; info: ModelInfo }
  | { type: "loadFailed"; error: SerializedError }
  /**
   * A generation's text and counts since the last message: at most one message per token, several tokens
   * coalesced while the channel is busy.
   */
  | { type: "stream"; id: number; text: string; progress: GenerationProgress | null }
  | { type: "done"; id: number; result: JobResult }
  | { type: "failed"; id: number; error: SerializedError }
  /** llama.cpp's own log lines (warnings and errors). */
  | { type: "log"; level: string; message: string };
