import type { ModelInfo } from "./models.ts";

/** What the daemon answers a load, a stop and an unload with, whichever machine answers them. */

export interface LoadResult {
  model: ModelInfo;
}

export interface StopResult {
  stopped: boolean;
  /** Queued requests dropped by `{"all": true}`. */
  dropped: number;
}

export interface UnloadResult {
  unloaded: boolean;
}
