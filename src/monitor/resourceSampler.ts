import si from "systeminformation";
import { createCpuLoadMeter } from "./cpuLoad.ts";

/** One reading of the daemon's resource use, taken by the monitor actor and kept in the machine's context. */
export interface ResourceSample {
  /** CPU used by the daemon process since the previous sample, in percent of one core (200 = two cores busy). */
  cpu_usage: number;
  /** Resident set size of the daemon process, in bytes (includes the model's mapped, touched pages). */
  memory_usage: number;
  system: {
    /** Whole-machine CPU load in percent of all cores. */
    cpu_load: number;
    memory_total: number;
    memory_available: number;
  };
  sampled_at: string;
}

export const EMPTY_SAMPLE: ResourceSample = {
  cpu_usage: 0,
  memory_usage: 0,
  system: { cpu_load: 0, memory_total: 0, memory_available: 0 },
  sampled_at: new Date(0).toISOString(),
};

export type ResourceSampler = () => Promise<ResourceSample>;

/**
 * Samples the process's own figures from Node (getrusage and /proc/self/statm, which are exact for the
 * process), the machine's memory from systeminformation and its CPU load from `os.cpus()` (see cpuLoad.ts for
 * why not systeminformation's). Both CPU percentages are deltas between calls.
 */
export function createResourceSampler(): ResourceSampler {
  let lastCpu = process.cpuUsage();
  let lastAt = performance.now();
  const machineLoad = createCpuLoadMeter();
  return async () => {
    const mem = await si.mem();
    const load = machineLoad();
    const now = performance.now();
    const cpu = process.cpuUsage();
    const usedMicros = cpu.user - lastCpu.user + (cpu.system - lastCpu.system);
    const elapsedMicros = Math.max(1, (now - lastAt) * 1000);
    lastCpu = cpu;
    lastAt = now;
    return {
      cpu_usage: Math.round((usedMicros / elapsedMicros) * 1000) / 10,
      memory_usage: process.memoryUsage.rss(),
      system: {
        cpu_load: Math.round(load * 10) / 10,
        memory_total: mem.total,
        memory_available: mem.available,
      },
      sampled_at: new Date().toISOString(),
    };
  };
}
