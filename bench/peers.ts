// `npm run bench:peers`: builds llama.cpp's llama-bench and llama-server, CPU only, from the llama.cpp source
// that node-llama-cpp's npm package carries (llama/gitRelease.bundle: the same version the binding runs),
// into bench/peers/ (ignored by git). Set LLAMA_CPP_BIN to a folder with both binaries to skip the build.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sourceBuildOptions } from "../src/engine/sourceBuild.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const PEERS = join(ROOT, "bench", "peers");
// The build links ggml as shared libraries found through the binaries' rpath, so they are used in place.
export const PEER_BIN = process.env.LLAMA_CPP_BIN ?? join(PEERS, "build", "bin");

/** What CPU kernels the peers are built for: the same rule as the engine's own source build. */
export function peerCpuFlags(): { cmake: string[]; description: string } {
  const { cmake, description } = sourceBuildOptions();
  const options = Object.entries(cmake).map(([k, v]) => `-D${k}=${v}`);
  return { cmake: options.length ? options : ["-DGGML_NATIVE=ON"], description };
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
