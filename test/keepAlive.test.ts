import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Ollama } from "ollama";
import { FOREVER, MAX_TIMER_MS, parseDuration } from "../src/duration.ts";
import type { ModelView } from "../src/server/statusView.ts";
import { runningOf } from "../src/server/ollama/views.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { slowModel, tinyModel } from "../testing/fixtures.ts";

/**
 * Keep-alives longer than a timer can wait: Node's setTimeout fires at once past 2^31-1 ms (24.8 days), and a
 * date that far out can be out of JavaScript's range. Such a keep-alive means "until unloaded".
 */

const ollamaForever = "2318-11-29T00:00:00Z";

describe("keep-alive durations past a timer's range", () => {
  it("reads a keep-alive a timer can hold as it is", () => {
    assert.equal(parseDuration("24h"), 86_400_000);
    assert.equal(parseDuration(86_400), 86_400_000);
    assert.equal(parseDuration("596h"), 596 * 3_600_000, "just under 24.9 days");
    assert.equal(parseDuration("1h30m"), 5_400_000);
    assert.equal(parseDuration(MAX_TIMER_MS / 1000), MAX_TIMER_MS, "the longest delay a timer holds");
    assert.equal(parseDuration(0), 0);
    assert.equal(parseDuration(-1), FOREVER);
  });

  it("reads one past the timer's range as forever", () => {
    assert.equal(parseDuration("720h"), FOREVER, "30 days, as Ollama users write it");
    assert.equal(parseDuration("597h"), FOREVER, "just past 24.8 days");
    assert.equal(parseDuration((MAX_TIMER_MS + 1) / 1000), FOREVER, "2^31 ms");
    assert.equal(parseDuration(1e300), FOREVER);
    assert.equal(parseDuration("1" + "0".repeat(400) + "h"), FOREVER, "a number of hours past a double's range");
    assert.equal(parseDuration(Infinity), FOREVER);
    assert.equal(parseDuration(-Infinity), FOREVER);
  });

  it("still refuses what is not a duration", () => {
    for (const garbage of [NaN, "soon", "", "5x", "1e300", true, null, {}, [5]]) assert.equal(parseDuration(garbage), null, JSON.stringify(garbage));
  });

  it("writes /api/ps's expiry for any keep-alive without building an invalid date", () => {
    const view = (keepAliveS: number) => ({ name: "m", info: null, engine_rss_bytes: null, memory_bytes: 1, context_size: null, expires_at: null, keep_alive_s: keepAliveS }) as unknown as ModelView;
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(runningOf(view(60), undefined, now).expires_at, "2026-01-01T00:01:00.000Z");
    assert.equal(runningOf(view(-1), undefined, now).expires_at, ollamaForever);
    assert.equal(runningOf(view(1e300), undefined, now).expires_at, ollamaForever);
    assert.equal(runningOf(view(Infinity), undefined, now).expires_at, ollamaForever);
    assert.equal(runningOf(view(1e10), undefined, now).expires_at, ollamaForever, "a date past Ollama's forever is forever");
  });
});

describe("keep-alive past a timer's range, through the daemon", () => {
  let d: TestDaemon;
  let dir: string;
  let ollama: Ollama;
  const loaded = async (name: string) => (await d.status()).models.find((m: { name: string }) => m.name === name) as Record<string, any> | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-keepalive-"));
    await copyFile(await tinyModel(), join(dir, "tiny.gguf"));
    await copyFile(await slowModel(), join(dir, "slow.gguf"));
    d = await startTestDaemon({ modelsDirs: [dir], maxModels: 2 });
    ollama = new Ollama({ host: d.url });
  });
  after(async () => {
    await d?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps a model loaded with keep_alive "720h" (it was unloaded at once: the timer fired immediately)', async () => {
    const r = await ollama.generate({ model: "tiny", prompt: "", keep_alive: "720h" });
    assert.equal(r.done_reason, "load");
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const tiny = await loaded("tiny");
    assert.equal(tiny?.state, "idle", JSON.stringify(tiny));
    assert.equal(tiny.keep_alive_s, -1);
    assert.equal(tiny.expires_at, null, "kept forever");
    const ps = (await ollama.ps()).models.find((m) => m.name === "tiny:latest");
    assert.equal(new Date(ps!.expires_at).toISOString(), new Date(ollamaForever).toISOString());
  });

  it("answers /api/ps while a model kept 1e300 seconds generates, and keeps it loaded after", async () => {
    const stream = await ollama.generate({ model: "slow", prompt: "abc", raw: true, stream: true, keep_alive: 1e300, options: { num_predict: 5000 } });
    let checked = false;
    try {
      for await (const _ of stream) {
        if (checked) continue;
        checked = true;
        const res = await fetch(`${d.url}/api/ps`);
        const body = await res.text();
        assert.equal(res.status, 200, body);
        const slow = (JSON.parse(body) as { models: Array<{ name: string; expires_at: string }> }).models.find((m) => m.name === "slow:latest");
        assert.ok(slow && !Number.isNaN(Date.parse(slow.expires_at)), body);
        assert.equal((await d.get("/status")).status, 200);
        stream.abort();
      }
    } catch (e) {
      if (!checked || (e as Error).name !== "AbortError") throw e;
    }
    assert.ok(checked, "the stream gave a part");
    await waitUntil(async () => (await loaded("slow"))?.state === "idle", 10_000, "slow idle after the stop");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal((await loaded("slow"))?.state, "idle", "still loaded after it went idle");
  });
});
