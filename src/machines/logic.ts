import type { Engine } from "../engine/types.ts";
import { loadModelActor } from "../engine/engineActors.ts";
import { monitorActor } from "../monitor/monitorActor.ts";
import { EMPTY_SAMPLE, type ResourceSampler } from "../monitor/resourceSampler.ts";
import { keepModel } from "./runtime/models.ts";
import { runtimeMachine } from "./runtimeMachine.ts";
import { admitModelWith } from "./supervisor/actors.ts";
import { supervisorMachine } from "./supervisorMachine.ts";

/**
 * The machines bound to an engine. The engine (and the resource sampler) are provided as actors rather than
 * passed as input, so no context holds a handle: a context is data that can be serialised. A loaded model's
 * handle goes to the registry of runtime/models.ts, which the runtime's actors read.
 */

/** The runtime machine whose loads run on `engine`. */
export const createRuntimeLogic = (engine: Engine) => runtimeMachine.provide({ actors: { loadModel: loadModelActor(engine, keepModel) } });

/** The supervisor whose admissions plan on `engine` and whose runtimes load on it; `sampleResources` feeds its monitor (default: empty readings). */
export function createSupervisorLogic(engine: Engine, sampleResources: ResourceSampler = () => Promise.resolve(EMPTY_SAMPLE)) {
  return supervisorMachine.provide({
    actors: {
      admitModel: admitModelWith(engine),
      runtime: createRuntimeLogic(engine),
      monitor: monitorActor(sampleResources),
    },
  });
}
