import type { ErrorCode } from "../errors.ts";

/**
 * Refusals the machines give as transition parameters (`{ type: "refuse", params: NO_MODEL }`), word for
 * word the same wherever the same rule refuses. Each says what happened and what to do.
 */
export interface Refusal {
  code: ErrorCode;
  message: string;
}

export const SHUTTING_DOWN = { code: "SHUTTING_DOWN", message: "The daemon is shutting down." } as const satisfies Refusal;
export const NO_MODEL = { code: "NO_MODEL", message: "No model is loaded. POST /load_model with {\"path\": \"/abs/model.gguf\"} first." } as const satisfies Refusal;

export const LOADING = {
  load: { code: "MODEL_LOADING", message: "A model is already loading. Wait until GET /status shows state \"idle\", then retry." },
  run: { code: "QUEUE_FULL", message: "The model is loading and enough requests already wait for it (--parallel plus --max-queue). Retry once GET /status shows it \"idle\"." },
  unload: { code: "MODEL_LOADING", message: "A model is loading. Wait until it is loaded, then unload it." },
} as const satisfies Record<string, Refusal>;

export const BUSY = {
  load: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then load the model." },
  unload: { code: "BUSY", message: "A generation is running. POST /stop first (with {\"all\": true} to drop the queue too), then unload." },
} as const satisfies Record<string, Refusal>;

export const UNLOADING = {
  run: { code: "MODEL_UNLOADING", message: "This model is being unloaded. Load it again with POST /load_model once GET /status no longer lists it." },
  load: { code: "MODEL_UNLOADING", message: "This model is being unloaded. Retry once GET /status no longer lists it." },
} as const satisfies Record<string, Refusal>;
