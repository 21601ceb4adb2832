import { cpus } from "node:os";

/** Cumulative CPU time of the whole machine, in ms, as the kernel counts it since boot. */
export interface CpuTimes {
  busy: number;
  total: number;
}

function machineCpuTimes(): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const all = times.user + times.nice + times.sys + times.irq + times.idle;
    total += all;
    busy += all - times.idle;
  }
  return { busy, total };
}

/** Whole-machine load between two readings, in percent of all cores (0–100). */
export function loadBetween(before: CpuTimes, after: CpuTimes): number {
  const total = after.total - before.total;
  if (total <= 0) return 0;
  return Math.min(100, Math.max(0, ((after.busy - before.busy) / total) * 100));
}

/**
 * Measures whole-machine CPU load as the delta since the previous call.
 *
 * Why not systeminformation's `currentLoad()`: on Linux it runs `execSync("cat /proc/stat | grep cpu")`,
 * a shell and two processes started synchronously on the event loop at every sample. Measured on the
 * 2-vCPU bench machine: ~20–40 ms with the event loop frozen, once a second, which was the whole tail of
 * `/status` latency (p99 19 ms against a 5 ms target) and stalled token delivery while generating.
 * `os.cpus()` reads the same kernel counters in-process in well under a millisecond.
 */
export function createCpuLoadMeter(read: () => CpuTimes = machineCpuTimes): () => number {
  let last = read();
  return () => {
    const now = read();
    const load = loadBetween(last, now);
    last = now;
    return load;
  };
}
