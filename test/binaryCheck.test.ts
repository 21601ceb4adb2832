import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, describe, it } from "node:test";
import { FIXTURES } from "../testing/fixtures.ts";

/**
 * src/engine/binaryCheck.ts, preloaded as in an engine process: node-llama-cpp's test of its binary (a forked
 * subprocess) runs once, and later starts with the same binary skip it; a failed or unknown record, or
 * KEKAHYDE_BINARY_CHECK=always, runs it again. Each case is a fresh Node process that counts the processes
 * it starts (ChildProcess spawns) while getLlama starts.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const PRELOAD = new URL("../src/engine/binaryCheck.ts", import.meta.url).href;
const SCRIPT = `
import cp from "node:child_process";
let forks = 0;
const spawn = cp.ChildProcess.prototype.spawn;
cp.ChildProcess.prototype.spawn = function (...args) { forks++; return spawn.apply(this, args); };
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
console.log(JSON.stringify({ forks, buildType: llama.buildType }));
await llama.dispose();
`;

/**
 * The script is a file (node-llama-cpp forks its test with this process's execArgv, which would carry an -e),
 * inside the checkout so that it finds node-llama-cpp.
 */
async function start(cacheHome: string, env: Record<string, string> = {}): Promise<{ forks: number; buildType: string }> {
  await mkdir(FIXTURES, { recursive: true });
  const script = join(FIXTURES, "binary-check-start.mjs");
  await writeFile(script, SCRIPT);
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "--import", PRELOAD, script], {
    cwd: ROOT,
    env: { ...process.env, XDG_CACHE_HOME: cacheHome, ...env },
  });
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

describe("remembering node-llama-cpp's binary test", () => {
  let dir = "";
  after(() => rm(dir, { recursive: true, force: true }));

  it("tests the binary once, then not again while it is the same file", async (t) => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-binary-check-"));
    const first = await start(dir);
    if (first.buildType !== "prebuilt") return t.skip(`a ${first.buildType} binary is not tested by node-llama-cpp on this platform`);
    assert.equal(first.forks, 1, "the first start runs the test");
    const record = JSON.parse(await readFile(join(dir, "kekahyde", "binary-checks.json"), "utf8")) as Record<string, string>;
    assert.equal(Object.keys(record).length, 1);
    assert.match(Object.keys(record)[0], /llama-addon\.node/);
    assert.equal((await start(dir)).forks, 0, "a remembered pass skips the test");
    assert.equal((await start(dir, { KEKAHYDE_BINARY_CHECK: "always" })).forks, 1, "KEKAHYDE_BINARY_CHECK=always tests every time");
  });

  it("tests again when the record names another binary", async (t) => {
    const other = await mkdtemp(join(tmpdir(), "kekahyde-binary-check-"));
    try {
      await mkdir(join(other, "kekahyde"), { recursive: true });
      await writeFile(join(other, "kekahyde", "binary-checks.json"), JSON.stringify({ '[["/elsewhere/llama-addon.node",1,2,3],null,false]': "2026-01-01T00:00:00.000Z" }));
      const r = await start(other);
      if (r.buildType !== "prebuilt") return t.skip("not a prebuilt binary");
      assert.equal(r.forks, 1);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});
