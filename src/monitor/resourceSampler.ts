import { readFile } from "node:fs/promises";
import si from "systeminformation";
import { createCpuLoadMeter } from "./cpuLoad.ts";

/** One engine process's share, as the monitor read it. */
interface ProcessSample {
  pid: number;
  /** Resident set size in bytes (the model's touched pages, its KV cache, the library). */
  rss: number;
  /** CPU since the previous sample, in percent of one core. */
  cpu_usage: number;
}

/** One reading of the daemon's resource use, taken by the monitor actor and kept in the machine's context. */
export interface ResourceSample {
  /**
   * CPU used by the daemon since the previous sample, in percent of one core (200 = two cores busy): its own
   * process and its engine processes together.
   */
  cpu_usage: number;
  /** Resident set size of the daemon, in bytes: its own process plus its engine processes. */
  memory_usage: number;
  /** Each engine process (Linux: read from /proc; elsewhere none are listed). */
  processes: ProcessSample[];
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
  processes: [],
  system: { cpu_load: 0, memory_total: 0, memory_available: 0 },
  sampled_at: new Date(0).toISOString(),
};

export type ResourceSampler = () => Promise<ResourceSample>;

/** Clock ticks per second of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

/** A process's RSS (bytes) and CPU time (µs) from /proc; null when it has gone or there is no /proc. */
async function readProcess(pid: number): Promise<{ rss: number; cpuMicros: number } | null> {
  try {
    const [status, stat] = await Promise.all([readFile(`/proc/${pid}/status`, "utf8"), readFile(`/proc/${pid}/stat`, "utf8")]);
    const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return { rss: rssKb * 1024, cpuMicros: (ticks / TICKS_PER_S) * 1e6 };
  } catch {
    return null;
  }
}

/**
 * Samples the daemon's own figures from Node (getrusage and /proc/self/statm, which are exact for the
 * process), its engine processes' from /proc (`children` lists them), the machine's memory from
 * systeminformation and its CPU load from `os.cpus()` (see cpuLoad.ts for why not systeminformation's). CPU
 * percentages are deltas between calls.
 */
export function createResourceSampler(children: () => readonly number[] = () => []): ResourceSampler {
  let lastCpu = process.cpuUsage();
  let lastAt = performance.now();
  let lastChildCpu = new Map<number, number>();
  const machineLoad = createCpuLoadMeter();
  return async () => {
    const [mem, engines] = await Promise.all([si.mem(), Promise.all(children().map(async (pid) => ({ pid, read: await readProcess(pid) })))]);
    const load = machineLoad();
    const now = performance.now();
    const cpu = process.cpuUsage();
    const usedMicros = cpu.user - lastCpu.user + (cpu.system - lastCpu.system);
    const elapsedMicros = Math.max(1, (now - lastAt) * 1000);
    const percent = (micros: number) => Math.round((micros / elapsedMicros) * 1000) / 10;
    const processes: ProcessSample[] = [];
    const childCpu = new Map<number, number>();
    for (const { pid, read } of engines) {
      if (!read) continue;
      childCpu.set(pid, read.cpuMicros);
      processes.push({ pid, rss: read.rss, cpu_usage: percent(Math.max(0, read.cpuMicros - (lastChildCpu.get(pid) ?? read.cpuMicros))) });
    }
    lastCpu = cpu;
    lastAt = now;
    lastChildCpu = childCpu;
    return {
      cpu_usage: Math.round((percent(usedMicros) + processes.reduce((n, p) => n + p.cpu_usage, 0)) * 10) / 10,
      memory_usage: process.memoryUsage.rss() + processes.reduce((n, p) => n + p.rss, 0),
      processes,
      system: {
        cpu_load: Math.round(load * 10) / 10,
        memory_total: mem.total,
        memory_available: mem.available,
      },
      sampled_at: new Date().toISOString(),
    };
  };
}
