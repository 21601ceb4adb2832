import { fromPromise } from "xstate";
import type { LoadSettings, ModelPlan } from "../../domain/models.ts";
import type { Engine } from "../../engine/types.ts";

/** Reads the file once and plans the load before anything is evicted for it. */
export const admitModel = fromPromise<ModelPlan, { engine: Engine; path: string; settings: LoadSettings }>(({ input }) => input.engine.plan(input.path, input.settings));
