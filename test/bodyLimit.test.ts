import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { DISCARD_MAX_MS } from "../src/server/middleware/jsonBody.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { rawSocket } from "./helpers/rawHttp.ts";

// A refused body is still an answer: a body over --max-body gets its 413, even while the client is still
// sending it, because the daemon reads and discards the rest (within bounds) before it closes.

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects what the daemon sends until it closes the connection; resolves with it and when that happened. */
function collect(socket: Socket): Promise<{ data: string; closedAt: number; error?: string }> {
  return new Promise((resolve) => {
    let data = "";
    let error: string | undefined;
    socket.on("data", (d) => (data += d.toString("latin1")));
    socket.on("error", (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on("close", () => resolve({ data, closedAt: Date.now(), error }));
  });
}

/** `tries` POSTs of each size (MiB) with Node's fetch from a child process; what each got, by size, as JSON. */
function fetchInAnotherProcess(url: string, sizes: number[], tries: number): Promise<string> {
  const script = `
    const [url, sizes, tries] = JSON.parse(process.argv[1]);
    const outcomes = {};
    for (const mib of sizes) {
      const body = JSON.stringify({ prompt: "a".repeat(mib * 1024 * 1024) });
      outcomes[mib] = [];
      for (let i = 0; i < tries; i++) {
        try {
          const res = await fetch(url + "/run_prompt", { method: "POST", headers: { "content-type": "application/json" }, body });
          outcomes[mib].push(res.status + " " + (await res.json()).code);
        } catch (e) {
          outcomes[mib].push("failed: " + (e.cause?.code ?? e.cause?.message ?? e.message));
        }
      }
    }
    process.stdout.write(JSON.stringify(outcomes));`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", script, JSON.stringify([url, sizes, tries])], { timeout: 30_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}: ${stderr}`)) : resolve(stdout),
    ),
  );
}

function parseResponse(raw: string): { status: number; headers: Record<string, string>; body: string } {
  const end = raw.indexOf("\r\n\r\n");
  assert.ok(end > 0, `a complete response head: ${JSON.stringify(raw.slice(0, 200))}`);
  const [statusLine, ...lines] = raw.slice(0, end).split("\r\n");
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  const body = raw.slice(end + 4);
  assert.equal(Buffer.byteLength(body, "latin1"), Number(headers["content-length"]), "the whole body arrived");
  return { status: Number(statusLine.split(" ")[1]), headers, body };
}

describe("a body over --max-body", { timeout: 60_000 }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon(); // the default --max-body: 1 MiB
  });
  after(() => d?.close());

  it("gets its 413 JSON with Node's fetch, every time (2 and 4 MiB by Content-Length, from another process; streamed)", async () => {
    // The client runs in its own process, as real clients do: sharing the daemon's event loop hides the
    // reset (measured: the old daemon answered an in-process fetch every time, but another process's 4 MiB
    // fetch only 5 times in 20, the rest failing with EPIPE).
    const outcomes = JSON.parse(await fetchInAnotherProcess(d.url, [2, 4], 20)) as Record<string, string[]>;
    for (const [mib, list] of Object.entries(outcomes)) {
      const answered = list.filter((o) => o === "413 PAYLOAD_TOO_LARGE").length;
      assert.equal(answered, 20, `${mib} MiB: 413 in ${answered} of 20 tries: ${list.join(", ")}`);
    }

    const streamed: string[] = [];
    for (let i = 0; i < 5; i++) {
      // eslint-disable-next-line @typescript-eslint/require-await -- fetch streams an async iterable (a sync one is not a body)
      const chunks = (async function* () {
        for (let sent = 0; sent < 2 * MiB; sent += 64 * 1024) yield new Uint8Array(64 * 1024).fill(0x61);
      })();
      try {
        const res = await fetch(`${d.url}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: chunks as unknown as BodyInit, duplex: "half" } as RequestInit);
        streamed.push(`${res.status} ${((await res.json()) as { code?: string }).code}`);
      } catch (e) {
        streamed.push(`failed: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`);
      }
    }
    assert.deepEqual(streamed, Array(5).fill("413 PAYLOAD_TOO_LARGE"), "chunked");
    assert.equal((await d.get("/health")).status, 200);
  });

  it("is answered completely to a client that sends it slowly", async () => {
    const socket = await rawSocket(d.url);
    const response = collect(socket);
    socket.write(`POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${2 * MiB}\r\n\r\n`);
    let writeError: unknown;
    for (let sent = 0; sent < 2 * MiB; sent += 64 * 1024) {
      if (socket.destroyed) assert.fail(`the daemon closed the connection after ${sent} of ${2 * MiB} bytes`);
      socket.write(Buffer.alloc(64 * 1024, 0x61), (e) => (writeError ??= e));
      await sleep(20);
    }
    const { data, error } = await response;
    assert.equal(writeError ?? undefined, undefined, "every chunk was taken");
    assert.equal(error, undefined, "no reset");
    const res = parseResponse(data);
    assert.equal(res.status, 413);
    assert.equal(res.headers.connection, "close");
    assert.equal(JSON.parse(res.body).code, "PAYLOAD_TOO_LARGE");
  });

  it("is answered at once, without waiting for it, when its Content-Length is past what the daemon would discard", async () => {
    const socket = await rawSocket(d.url);
    const response = collect(socket);
    const started = Date.now();
    socket.write(`POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${1024 * MiB}\r\n\r\n`);
    const { data, closedAt } = await response;
    assert.ok(closedAt - started < 2_000, `closed after ${closedAt - started} ms`);
    assert.equal(parseResponse(data).status, 413);
  });

  it("cuts off a client that keeps sending slowly, within the time bound", async () => {
    const socket = await rawSocket(d.url);
    const response = collect(socket);
    const started = Date.now();
    socket.write(`POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${2 * MiB}\r\n\r\n`);
    socket.write(Buffer.alloc(MiB + 1, 0x61)); // past the limit: from here on it is discarded
    while (!socket.destroyed && Date.now() - started < DISCARD_MAX_MS + 2_000) {
      socket.write(Buffer.alloc(1024, 0x61), () => {});
      await sleep(100);
    }
    assert.ok(socket.destroyed, `still open after ${Date.now() - started} ms`);
    const { closedAt } = await response;
    const ms = closedAt - started;
    assert.ok(ms >= DISCARD_MAX_MS - 500 && ms < DISCARD_MAX_MS + 2_000, `cut off after ${ms} ms (bound ${DISCARD_MAX_MS} ms)`);
    assert.equal((await d.get("/health")).status, 200);
  });

  it("cuts off a client that keeps sending fast, after the byte bound", async () => {
    const socket = await rawSocket(d.url);
    const response = collect(socket);
    const started = Date.now();
    socket.write(`POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = Buffer.concat([Buffer.from(`${(256 * 1024).toString(16)}\r\n`), Buffer.alloc(256 * 1024, 0x61), Buffer.from("\r\n")]);
    while (!socket.destroyed && Date.now() - started < DISCARD_MAX_MS + 2_000) {
      if (!socket.write(chunk, () => {})) await Promise.race([new Promise((r) => socket.once("drain", r).once("close", r)), sleep(500)]);
    }
    assert.ok(socket.destroyed, `still open after ${Date.now() - started} ms`);
    const { closedAt } = await response;
    assert.ok(closedAt - started < DISCARD_MAX_MS, `cut off after ${closedAt - started} ms`);
    assert.ok(socket.bytesWritten < 64 * MiB, `the daemon took ${socket.bytesWritten} bytes`);
    assert.equal((await d.get("/health")).status, 200);
  });
});
