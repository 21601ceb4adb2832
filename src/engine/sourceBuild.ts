import { readFileSync } from "node:fs";

/** The CPU feature flags the kernel reports (Linux); empty elsewhere. */
function cpuFlags(): string[] {
  try {
    return readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1].trim().split(/\s+/) ?? [];
  } catch {
    return [];
  }
}

export interface SourceBuildOptions {
  /** CMake options beyond a node-llama-cpp source build's own defaults (native CPU kernels, OpenMP). */
  cmake: Record<string, string>;
  description: string;
}

/**
 * How llama.cpp is built from source on this CPU: for `npm run build:engine` (the binding), for
 * `npm run bench:peers` (llama-bench, llama-server), and for the engine, which must ask node-llama-cpp for a
 * local build under the same options to find it.
 *
 * Native kernels, except on a CPU with AMX: a source build with AMX enabled has died here with an illegal
 * instruction in the AMX matmul kernel, so such CPUs get AVX-512 (VNNI, BF16) with AMX off. Options left
 * at the defaults are not named, so that a plain `node-llama-cpp source build` lands in the same folder.
 */
export function sourceBuildOptions(flags: readonly string[] = cpuFlags()): SourceBuildOptions {
  if (flags.includes("amx_tile")) {
    return {
      cmake: {
        GGML_NATIVE: "OFF",
        GGML_AVX: "ON",
        GGML_AVX2: "ON",
        GGML_FMA: "ON",
        GGML_F16C: "ON",
        GGML_AVX512: "ON",
        GGML_AVX512_VNNI: "ON",
        GGML_AVX512_BF16: "ON",
        GGML_AMX_TILE: "OFF",
        GGML_AMX_INT8: "OFF",
        GGML_AMX_BF16: "OFF",
      },
      description: "AVX-512 (VNNI, BF16) without AMX: this CPU has AMX, whose kernel has died with an illegal instruction in source builds",
    };
  }
  const simd = ["avx512f", "avx512_vnni", "avx512_bf16", "avx2", "fma", "f16c"].filter((f) => flags.includes(f));
  return { cmake: {}, description: `native (${simd.join(", ") || "baseline"})` };
}
