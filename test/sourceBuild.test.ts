import assert from "node:assert/strict";
import { test } from "node:test";
import { sourceBuildOptions } from "../src/engine/sourceBuild.ts";

test("a source build uses this CPU's native kernels and names no option a plain node-llama-cpp build would not", () => {
  const { cmake, description } = sourceBuildOptions(["fpu", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"]);
  // No options: `node-llama-cpp source build` lands in the folder the engine looks in, by either route.
  assert.deepEqual(cmake, {});
  assert.match(description, /^native \(avx512f, avx512_vnni, avx2, fma, f16c\)$/);
});

test("on a CPU with AMX the source build leaves AMX out (its kernel has died with an illegal instruction)", () => {
  const { cmake, description } = sourceBuildOptions(["avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16"]);
  assert.equal(cmake.GGML_NATIVE, "OFF");
  assert.equal(cmake.GGML_AMX_TILE, "OFF");
  assert.equal(cmake.GGML_AMX_INT8, "OFF");
  assert.equal(cmake.GGML_AMX_BF16, "OFF");
  assert.equal(cmake.GGML_AVX512, "ON");
  assert.match(description, /without AMX/);
});
