import { fromPromise } from "xstate";
import type { LoadSettings, ModelPlan } from "../../domain/models.ts";
import type { Engine } from "../../engine/types.ts";
import { KekahydeError } from "../../errors.ts";

type AdmitInput = { path: string; settings: LoadSettings };

/** Reads the file once and plans the load on `engine` before anything is evicted for it. */
export const admitModelWith = (engine: Engine) => fromPromise<ModelPlan, AdmitInput>(({ input }) => engine.plan(input.path, input.settings));

/** The admission before an engine is provided (createSupervisorLogic, ../logic.ts): every load is refused, saying why. */
export const admitModel = fromPromise<ModelPlan, AdmitInput>(() =>
  Promise.reject(new KekahydeError("INTERNAL", "No engine was provided to the supervisor machine (use createSupervisorLogic).")),
);
