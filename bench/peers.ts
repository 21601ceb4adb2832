// `npm run bench:peers`: builds llama.cpp's llama-bench and llama-server, CPU only, from the llama.cpp source
// that node-llama-cpp's npm package carries (llama/gitRelease.bundle: the same version the binding runs),
// into bench/peers/ (ignored by git). Set LLAMA_CPP_BIN to a folder with both binaries to skip the build.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const PEERS = join(ROOT, "bench", "peers");
// The build links ggml as shared libraries found through the binaries' rpath, so they are used in place.
export const PEER_BIN = process.env.LLAMA_CPP_BIN ?? join(PEERS, "build", "bin");

/** What CPU kernels a native build would use here; AMX is left out (its kernel has died with SIGILL). */
export function peerCpuFlags(): { cmake: string[]; description: string } {
  const flags = readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1].trim().split(/\s+/) ?? [];
  if (flags.includes("amx_tile")) {
    return {
      cmake: ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"],
      description: "AVX-512 (VNNI, BF16) without AMX: this CPU has AMX, whose kernel has died with an illegal instruction in source builds",
    };
  }
  const simd = ["avx512f", "avx512_vnni", "avx512_bf16", "avx2", "fma", "f16c"].filter((f) => flags.includes(f));
  return { cmake: ["-DGGML_NATIVE=ON"], description: `native (${simd.join(", ") || "baseline"})` };
}

function run(cmd: string, args: string[], cwd?: string): void {
  console.log(`$ ${cmd} ${args.join(" ")}`);
  execFileSync(cmd, args, { cwd, stdio: "inherit" });
}

export function peersAvailable(): boolean {
  return existsSync(join(PEER_BIN, "llama-bench")) && existsSync(join(PEER_BIN, "llama-server"));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.env.LLAMA_CPP_BIN) {
    console.log(peersAvailable() ? `using peers from LLAMA_CPP_BIN=${PEER_BIN}` : `LLAMA_CPP_BIN=${PEER_BIN} lacks llama-bench or llama-server`);
    process.exit(peersAvailable() ? 0 : 1);
  }
  const bundle = join(ROOT, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  const info = JSON.parse(readFileSync(join(ROOT, "node_modules", "node-llama-cpp", "llama", "llama.cpp.info.json"), "utf8")) as { tag: string };
  const src = join(PEERS, "src");
  const build = join(PEERS, "build");
  mkdirSync(PEERS, { recursive: true });
  if (!existsSync(join(src, "CMakeLists.txt"))) {
    rmSync(src, { recursive: true, force: true });
    run("git", ["clone", "--quiet", bundle, src]);
  }
  const { cmake, description } = peerCpuFlags();
  console.log(`building llama.cpp ${info.tag} (from node-llama-cpp's bundle), CPU only, kernels: ${description}`);
  run("cmake", [
    "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
    ...cmake,
  ]);
  run("cmake", ["--build", build, "--target", "llama-bench", "llama-server", "-j", String(cpus().length)]);
  console.log(`peers in ${PEER_BIN}`);
}
