import { availableParallelism } from "node:os";
import si from "systeminformation";

/**
 * The default number of threads for generation: one fewer than the physical cores, at least one.
 *
 * Why not node-llama-cpp's own default: it asks for 4 threads on a 2-vCPU machine, and ggml's workers spin
 * while waiting for each other, so any oversubscription is ruinous. Measured on a 2-vCPU AMD EPYC VM
 * (docs/performance.md): the 208 MB test model ran 10.3 ms/token with 1 thread and 20.4 with 2; a 5 MB one
 * 0.6 against 15 ms/token. Leaving one core to the event loop (HTTP, monitor) keeps the daemon responsive
 * while it generates; on large machines the lost core costs little. `--threads` overrides.
 */
export function defaultThreadCount(physicalCores: number, logicalCores: number = availableParallelism()): number {
  const cores = Math.max(1, Math.min(physicalCores || logicalCores, logicalCores));
  return Math.max(1, cores - 1);
}

export async function detectDefaultThreads(): Promise<number> {
  const cpu = await si.cpu();
  return defaultThreadCount(cpu.physicalCores);
}
