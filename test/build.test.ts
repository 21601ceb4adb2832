import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { killStartedDaemons, spawnDaemon } from "../testing/daemonProcess.ts";
import { tinyModel } from "../testing/fixtures.ts";

// What `npm install` builds (scripts/build.mjs, run by "prepare"): dist/ compiled by tsc, and the daemon's and
// the engine process's entries bundled into one file each (scripts/bundle.mjs), which bin/kekahyde.js runs.
// Built here into .dist-test/, a folder of the checkout's root as dist/ is, so dist/ itself is left alone.

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, ".dist-test");
const CLI_BUNDLE = join(OUT, "cli.bundle.mjs");
const HOST_BUNDLE = join(OUT, "engine", "process", "host.bundle.mjs");

describe("the build: the daemon and its engine processes from one-file bundles", { timeout: 300_000 }, () => {
  before(() => {
    execFileSync(process.execPath, [join(ROOT, "scripts", "build.mjs"), "--out", ".dist-test"], { cwd: ROOT, stdio: "pipe", timeout: 240_000 });
  });
  after(killStartedDaemons);

  it("serves a real model on plain Node: the engine process runs the engine bundle", async () => {
    const d = await spawnDaemon([], { entry: [CLI_BUNDLE] });
    try {
      const load = await d.post("/load_model", { path: await tinyModel() });
      const body = (await load.json()) as Record<string, any>;
      assert.equal(load.status, 200, JSON.stringify(body));
      assert.equal(body.message, "Model loaded");
      const cmdline = readFileSync(`/proc/${body.model.engine_pid}/cmdline`, "utf8").split("\0");
      assert.ok(cmdline.includes(HOST_BUNDLE), `the engine process runs ${cmdline.join(" ")}`);
      assert.ok(!cmdline.some((arg) => /tsx/.test(arg)), "no TypeScript loader in the engine process");

      const res = await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 10 });
      assert.equal(await res.text(), "defghijklm");
      // A grammar (a JSON schema) takes node-llama-cpp's grammar classes, which the plain path never touches.
      const constrained = await d.post("/v1/chat/completions", { model: body.name, messages: [{ role: "user", content: "abc" }], max_tokens: 8, response_format: { type: "json_object" } });
      assert.equal(constrained.status, 200, await constrained.clone().text());
      const inspector = await fetch(`${d.url}/inspect`);
      assert.equal(inspector.status, 200, "the inspector page, read beside its module, is found from the bundle");
    } finally {
      d.child.kill("SIGTERM");
      await d.exited;
    }
  });

  it("each bundled module finds its own files relative to the bundle, not by this machine's path", () => {
    const version = execFileSync(process.execPath, [CLI_BUNDLE, "--version"], { encoding: "utf8" }).trim();
    assert.match(version, new RegExp(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version.replace(/\./g, "\\.")));
    for (const file of [CLI_BUNDLE, HOST_BUNDLE]) {
      assert.ok(!readFileSync(file, "utf8").includes(ROOT), `${file} names no absolute path (a moved checkout still runs)`);
    }
  });
});
