import { join } from "node:path";
import { Writable } from "node:stream";
import { DEFAULTS, type ServeConfig } from "../../src/config.ts";
import { startDaemon, type Daemon } from "../../src/daemon.ts";
import { createLogger } from "../../src/log.ts";
import { FIXTURES } from "../../testing/fixtures.ts";

/** Log lines a test daemon wrote, parsed; kept in memory so tests can assert on them. */
export class LogCapture extends Writable {
  lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString("utf8").split("\n")) if (line) this.lines.push(JSON.parse(line));
    done();
  }
}

/** Its functions are arrows, bound to nothing: tests take them out of the object (`engineExits(d.get)`). */
export interface TestDaemon extends Daemon {
  logs: LogCapture;
  post: (path: string, body?: unknown, headers?: Record<string, string>, signal?: AbortSignal) => Promise<Response>;
  get: (path: string) => Promise<Response>;
  status: () => Promise<Record<string, any>>;
}

// The default models directory ($XDG_DATA_HOME/kekahyde/models) and the digests' cache ($XDG_CACHE_HOME) of
// the daemons that tests start are the git-ignored fixtures folder's, never the user's.
process.env.XDG_DATA_HOME = join(FIXTURES, "data");
process.env.XDG_CACHE_HOME = join(FIXTURES, "cache");

/** Starts the real daemon (real node-llama-cpp engine) on a free loopback port. */
export async function startTestDaemon(overrides: Partial<ServeConfig> = {}, timeouts?: { headersMs: number; requestMs: number }): Promise<TestDaemon> {
  const logs = new LogCapture();
  // No spare engine process unless a test asks for one: starting one costs a second of CPU, and most test
  // daemons load one model or none (test/isolation.http.test.ts tests the spare itself).
  const config: ServeConfig = { ...DEFAULTS, port: 0, gpu: "off", monitorIntervalMs: 200, spareEngine: false, ...overrides };
  const daemon = await startDaemon(config, { log: createLogger("info", logs), timeouts });
  const post = (path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) =>
    fetch(daemon.url + path, {
      method: "POST",
      signal,
      headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
  const get = (path: string) => fetch(daemon.url + path);
  const status = async () => (await get("/status")).json() as Promise<Record<string, any>>;
  return { ...daemon, logs, post, get, status };
}

export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
