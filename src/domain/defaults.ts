/**
 * The daemon's defaults, in one place that the CLI, the config parser, the machines and the engine all read
 * (no XState or engine import here, so `kekahyde status` stays light).
 */

/** Requests that may wait per model while its slots are busy. */
export const DEFAULT_MAX_QUEUE = 16;
/** How long an idle model stays loaded. */
export const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;
/** `--max-memory` when not given: this fraction of the memory free for models. */
export const DEFAULT_MEMORY_FRACTION = 0.9;
/** Context size per sequence, capped at the model's trained length. */
export const DEFAULT_CONTEXT_SIZE = 2048;

/** Longest a load may take before its engine process is stopped (a huge model on slow storage may need more). */
export const DEFAULT_MAX_LOAD_SECONDS = 600;
/** Longest a generation may wait for its first token before its engine process is stopped. */
export const DEFAULT_MAX_FIRST_TOKEN_SECONDS = 600;
/** Longest a generation may go without a token, once it has had its first, before its engine process is stopped. */
export const DEFAULT_MAX_STALL_SECONDS = 60;

/** Sampling as llama-server's defaults: what users of local daemons expect when they send no options. */
export const SAMPLING_DEFAULTS = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1.0 } as const;
