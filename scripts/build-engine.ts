// `npm run build:engine`: compiles node-llama-cpp's binding from the llama.cpp source its npm package carries
// (llama/gitRelease.bundle, the same version as the prebuilt binary; nothing is downloaded), CPU only, with
// OpenMP and this CPU's kernels. The daemon uses it from then on (`engine_build: "localBuild"` in /status);
// `npm run build:engine -- --remove` goes back to the prebuilt binary.
//
// Why: the prebuilt binary is built without OpenMP and node-llama-cpp attaches no thread pool to ggml, so
// every decode with more than one thread creates and joins its worker threads again. Measured on a 2-vCPU
// VM, 110M Q8_0 model, 2 threads: 57 tokens/s inside llama_decode prebuilt, 152 with this build (1 thread:
// 184 and 193). See docs/performance.md. Takes ~8 minutes on 2 cores; needs cmake and a C++ compiler.
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { sourceBuildOptions } from "../src/engine/sourceBuild.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const localBuilds = join(ROOT, "node_modules", "node-llama-cpp", "llama", "localBuilds");

if (process.argv.includes("--remove")) {
  rmSync(localBuilds, { recursive: true, force: true });
  console.log("Removed the local engine build; the daemon runs node-llama-cpp's prebuilt binary again.");
  process.exit(0);
}

const { cmake, description } = sourceBuildOptions();
const env = { ...process.env };
for (const [key, value] of Object.entries(cmake)) env[`NODE_LLAMA_CPP_CMAKE_OPTION_${key}`] = value;
console.log(`Building the engine from node-llama-cpp's bundled llama.cpp source: CPU only, OpenMP, ${description}.`);
const result = spawnSync("npx", ["--no", "node-llama-cpp", "source", "download", "--gpu", "false", "--noUsageExample"], { cwd: ROOT, env, stdio: "inherit" });
if (result.status !== 0 || !existsSync(localBuilds)) {
  console.error("The engine build failed; the daemon keeps using the prebuilt binary.");
  process.exit(result.status || 1);
}
console.log("Done. Restart the daemon; /status shows engine_build: \"localBuild\" for models it loads.");
