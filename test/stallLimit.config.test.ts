import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError, parseServeArgs, serveHelp } from "../src/config.ts";

/** --max-stall-time: how long a generation may go without a token, once it has had its first (src/engine/process). */
describe("--max-stall-time", () => {
  it("is 60 s by default", () => {
    assert.equal(parseServeArgs([], {}).config.maxStallSeconds, 60);
    assert.match(serveHelp(), /--max-stall-time SECONDS .*0 or off: no limit \[default: 60\]\n\s+env KEKAHYDE_MAX_STALL_TIME/);
  });

  it("takes seconds from a flag, the environment or a config file; 0 or off turns it off", async () => {
    assert.equal(parseServeArgs(["--max-stall-time", "5"], {}).config.maxStallSeconds, 5);
    assert.equal(parseServeArgs(["--max-stall-time", "off"], {}).config.maxStallSeconds, null);
    assert.equal(parseServeArgs(["--max-stall-time", "0"], {}).config.maxStallSeconds, null);
    assert.equal(parseServeArgs([], { KEKAHYDE_MAX_STALL_TIME: "120" }).config.maxStallSeconds, 120);
    assert.equal(parseServeArgs([], { KEKAHYDE_MAX_STALL_TIME: "OFF" }).config.maxStallSeconds, null);
    assert.equal(parseServeArgs(["--max-stall-time", "7"], { KEKAHYDE_MAX_STALL_TIME: "off" }).config.maxStallSeconds, 7, "the flag wins");
    const dir = await mkdtemp(join(tmpdir(), "kekahyde-stall-"));
    try {
      const toml = join(dir, "kekahyde.toml");
      await writeFile(toml, "max-stall-time = 0\n");
      assert.equal(parseServeArgs(["--config", toml], {}).config.maxStallSeconds, null);
      await writeFile(toml, 'max-stall-time = "off"\n');
      assert.equal(parseServeArgs(["--config", toml], {}).config.maxStallSeconds, null);
      await writeFile(toml, "max-stall-time = 90\n");
      assert.equal(parseServeArgs(["--config", toml], {}).config.maxStallSeconds, 90);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses what is not a number of seconds, saying what it takes", () => {
    for (const bad of ["-1", "1.5", "soon", "86401"]) {
      assert.throws(() => parseServeArgs([`--max-stall-time=${bad}`], {}), (e: Error) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.message, `--max-stall-time must be an integer from 1 to 86400 (seconds), or 0 or off for no limit, got "${bad}"`);
        return true;
      });
    }
  });
});
