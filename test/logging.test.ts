import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { Writable } from "node:stream";
import { after, describe, it } from "node:test";
import { LogDestination, logLinesDropped } from "../src/log.ts";
import { waitUntil } from "./helpers/daemon.ts";
import { killStartedDaemons, spawnDaemon as spawnDaemonProcess } from "../testing/daemonProcess.ts";

// Logging never holds the daemon: a log reader that stops reading, or goes away, costs log lines (dropped
// and counted), never a request and never the shutdown.

/** The real daemon in its own process, its stdout a pipe that this test never reads. */
const spawnDaemon = () => spawnDaemonProcess([], { readStdout: false });
after(killStartedDaemons);

/** Requests that each write an info line of about 8 KiB (a 404 names its path): `count` of them, 8 at a time. */
async function logLoudly(url: string, count: number): Promise<void> {
  const path = `/no-such-route-${"x".repeat(8_000)}`;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const res = await fetch(url + path, { signal: AbortSignal.timeout(5_000) });
      assert.equal(res.status, 404);
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

/** SIGTERM, then the exit code and how long it took; null if it had not exited after `limitMs`. */
async function terminate(child: ChildProcess, limitMs: number): Promise<{ code: number | null; ms: number } | null> {
  const started = Date.now();
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const result = await Promise.race([exited.then(([code]) => ({ code: code as number | null, ms: Date.now() - started })), new Promise<null>((r) => setTimeout(r, limitMs, null))]);
  if (result === null) child.kill("SIGKILL");
  return result;
}

describe("a daemon whose log reader stops reading", { timeout: 60_000 }, () => {
  it("keeps answering, and SIGTERM still exits at once with code 0", async () => {
    const { child, url, stderr } = await spawnDaemon();
    // ~1.6 MB of log lines: more than the pipe (64 KiB), Node's read-ahead (16 KiB) and the daemon's 1 MiB bound hold.
    await logLoudly(url, 200);
    const started = Date.now();
    const health = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { ok: true });
    assert.ok(Date.now() - started < 1_000, "a request is not held by the full log pipe");
    const exit = await terminate(child, 5_000);
    assert.ok(exit, `SIGTERM did not end the daemon within 5 s (stderr: ${stderr()})`);
    assert.equal(exit.code, 0, stderr());
  });

  it("keeps answering when the reader has gone away (EPIPE), and SIGTERM exits with code 0", async () => {
    const { child, url, stderr } = await spawnDaemon();
    child.stdout!.destroy();
    await logLoudly(url, 40);
    assert.equal((await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) })).status, 200);
    const exit = await terminate(child, 5_000);
    assert.ok(exit, `SIGTERM did not end the daemon within 5 s (stderr: ${stderr()})`);
    assert.equal(exit.code, 0, stderr());
    assert.doesNotMatch(stderr(), /EPIPE|Error/);
  });

  it("exits with code 0 on SIGTERM when the reader stalled and then went away with lines still waiting", async () => {
    const { child, url, stderr } = await spawnDaemon();
    await logLoudly(url, 150);
    child.stdout!.destroy();
    await logLoudly(url, 10);
    assert.equal((await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) })).status, 200);
    const exit = await terminate(child, 5_000);
    assert.ok(exit, `SIGTERM did not end the daemon within 5 s (stderr: ${stderr()})`);
    assert.equal(exit.code, 0, stderr());
  });

  it("logs how many lines it dropped once the reader reads again", async () => {
    const { child, url, stderr } = await spawnDaemon();
    await logLoudly(url, 200);
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    let notice: Record<string, any> | undefined;
    // Each try logs one more line (a 404): the notice is written with the next line once the reader reads.
    await waitUntil(async () => {
      assert.equal((await fetch(`${url}/no-such-route`)).status, 404);
      const line = out.split("\n").find((l) => l.includes('"log_lines_dropped"'));
      if (line) notice = JSON.parse(line);
      return notice !== undefined;
    }, 5_000, "a log_lines_dropped line");
    assert.ok(notice, "a log_lines_dropped line");
    assert.equal(notice.level, "warn");
    assert.ok(notice.lines > 0 && notice.total >= notice.lines, JSON.stringify(notice));
    const exit = await terminate(child, 5_000);
    assert.ok(exit, `SIGTERM did not end the daemon within 5 s (stderr: ${stderr()})`);
    assert.equal(exit.code, 0, stderr());
  });
});

/** A stream whose writes never complete, like a pipe nobody reads. */
class Stalled extends Writable {
  pending: Array<() => void> = [];
  override _write(_chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.pending.push(done);
  }
  release(): void {
    for (const done of this.pending.splice(0)) done();
  }
}

describe("LogDestination", () => {
  it("buffers at most maxBufferedBytes for a stalled reader, drops and counts the rest, and says so once it can", async () => {
    const target = new Stalled();
    const notices: number[] = [];
    const dest = new LogDestination(target, { maxBufferedBytes: 1_000, onDropped: (n) => notices.push(n) });
    const before = logLinesDropped();
    const line = `${JSON.stringify({ msg: "x".repeat(80) })}\n`; // 92 bytes
    for (let i = 0; i < 100; i++) assert.equal(dest.write(line), true, "never asks pino to wait");
    assert.ok(target.writableLength <= 1_000, `buffered ${target.writableLength}`);
    assert.equal(dest.dropped, 100 - Math.floor(1_000 / line.length));
    assert.equal(logLinesDropped() - before, dest.dropped, "the process-wide count includes it");
    assert.deepEqual(notices, [], "no notice while nothing can be written");
    target.release();
    await new Promise((r) => setImmediate(r));
    dest.write(line);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(notices, [dest.dropped], "one notice with the count once lines go through again");
  });

  it("flushes within its time bound even when nothing can be written", async () => {
    const dest = new LogDestination(new Stalled(), { flushTimeoutMs: 100 });
    dest.write("{}\n");
    const started = Date.now();
    await new Promise<void>((resolve) => dest.flush(() => resolve()));
    const ms = Date.now() - started;
    assert.ok(ms >= 90 && ms < 1_000, `flush took ${ms} ms`);
  });

  it("flushes at once when everything has been written", async () => {
    const dest = new LogDestination(new Writable({ write: (_c, _e, done) => done() }));
    dest.write("{}\n");
    const started = Date.now();
    await new Promise<void>((resolve) => dest.flush(() => resolve()));
    assert.ok(Date.now() - started < 50);
  });

  it("drops and counts every line after the reader failed (EPIPE), without throwing", () => {
    const target = new Writable({ write: (_c, _e, done) => done() });
    const dest = new LogDestination(target);
    dest.write("{}\n");
    target.emit("error", Object.assign(new Error("write EPIPE"), { code: "EPIPE" }));
    assert.equal(dest.write("{}\n"), true);
    assert.equal(dest.write("{}\n"), true);
    assert.equal(dest.dropped, 2);
    let flushed = false;
    dest.flush(() => (flushed = true));
    return new Promise<void>((resolve) => setImmediate(() => (assert.ok(flushed), resolve())));
  });

  it("renders lines for people when asked, through the same bound", () => {
    const chunks: string[] = [];
    const dest = new LogDestination(new Writable({ write: (c, _e, done) => (chunks.push(String(c)), done()) }), { pretty: true });
    dest.write(`${JSON.stringify({ level: "info", time: "2025-01-01T00:00:00.000Z", service: "kekahyde", msg: "hello there" })}\n`);
    assert.match(chunks.join(""), /INFO.*hello there/);
    assert.doesNotMatch(chunks.join(""), /^\{/);
  });
});
