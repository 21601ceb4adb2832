import { fromCallback, type AnyActorRef, type EventObject } from "xstate";
import type { EngineEvent, LoadModelInput } from "../../engine/engineActors.ts";
import type { LoadedModel } from "../../engine/types.ts";
import { KekahydeError } from "../../errors.ts";

type AnyActorSystem = AnyActorRef["system"];

/**
 * The loaded models' handles, outside any context (a context holds data that can be serialised): one map per
 * actor system, keyed by the session id of the runtime that loaded the model. The loader puts a model here
 * before LOAD.DONE; the runtime's actors (its jobs, its engine watch, its disposer) read it; `forgetModel`
 * removes it. The context keeps only the model's facts (ModelInfo).
 */
const registries = new WeakMap<AnyActorSystem, Map<string, LoadedModel>>();

function registryOf(system: AnyActorSystem): Map<string, LoadedModel> {
  let models = registries.get(system);
  if (!models) registries.set(system, (models = new Map<string, LoadedModel>()));
  return models;
}

export const keepModel = (system: AnyActorSystem, owner: string, model: LoadedModel): void => void registryOf(system).set(owner, model);
export const modelOf = (system: AnyActorSystem, owner: string): LoadedModel | null => registries.get(system)?.get(owner) ?? null;
export const dropModelHandle = (system: AnyActorSystem, owner: string): void => void registries.get(system)?.delete(owner);

/** The loader before an engine is provided (createRuntimeLogic, ../logic.ts): every load fails, saying why. */
export const noEngineLoader = fromCallback<EventObject, LoadModelInput, EngineEvent>(({ sendBack }) => {
  sendBack({ type: "LOAD.FAILED", error: new KekahydeError("INTERNAL", "No engine was provided to this runtime machine (use createRuntimeLogic or createSupervisorLogic).") });
});
