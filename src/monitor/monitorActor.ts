import { fromCallback, type EventObject } from "xstate";
import type { ResourceSample, ResourceSampler } from "./resourceSampler.ts";

export interface MonitorInput {
  intervalMs: number;
}

export type MonitorEvent = { type: "MONITOR.SAMPLE"; sample: ResourceSample };

/**
 * Samples resources on an interval and sends each reading to the machine, so that /status reads the latest
 * sample from a snapshot instead of making system calls per request. A slow sample never overlaps the next.
 * The sampler is bound here, not passed as input, so that no function sits in a machine's context.
 */
export const monitorActor = (sampleResources: ResourceSampler) =>
  fromCallback<EventObject, MonitorInput, MonitorEvent>(({ input, sendBack }) => {
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const tick = async () => {
      try {
        const sample = await sampleResources();
        if (!stopped) sendBack({ type: "MONITOR.SAMPLE", sample });
      } catch {
        // A failed reading is skipped; the previous sample stays in place.
      }
      if (!stopped) timer = setTimeout(() => void tick(), input.intervalMs).unref();
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  });
