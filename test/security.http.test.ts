import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DEFAULTS } from "../src/config.ts";
import { checkExposure } from "../src/daemon.ts";
import { charModelSpec, expectedContinuation, TINY_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { GGUF_MAGIC } from "../src/gguf/format.ts";
import { encodeGgufHeader } from "../src/gguf/writer.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { slowModel, tinyModel } from "../testing/fixtures.ts";
import { closed, rawRequest, rawSocket } from "./helpers/rawHttp.ts";

// The adversarial suite: after every attack the daemon answers /status in one of its five states and a real
// run still writes the right text.

const KEY = "correct horse battery staple";
const auth = { authorization: `Bearer ${KEY}` };
const STATES = ["empty", "loading", "idle", "generating", "cancelling"];

describe("a daemon under attack", () => {
  let d: TestDaemon;
  let dir: string;
  let outside: string;
  let tiny: string;

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) => d.post(path, body, { ...auth, ...headers });
  const get = (path: string) => fetch(d.url + path, { headers: auth });
  const raw = (options: Parameters<typeof rawRequest>[1]) => rawRequest(d.url, { ...options, headers: { ...auth, ...options.headers } });

  async function assertHealthy(): Promise<void> {
    const res = await get("/status");
    assert.equal(res.status, 200);
    const status = (await res.json()) as Record<string, any>;
    assert.ok(STATES.includes(status.state), `state ${status.state}`);
    if (!status.model_loaded) assert.equal((await post("/load_model", { path: tiny })).status, 200);
    await waitUntil(async () => ((await (await get("/status")).json()) as { state: string }).state === "idle", 10_000, "idle");
    const run = await post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 7 });
    assert.equal(run.status, 200);
    assert.equal(await run.text(), "defghij");
  }

  async function refusedModel(name: string, bytes: Uint8Array | string, reason: RegExp): Promise<void> {
    const path = join(dir, name);
    await writeFile(path, bytes);
    const res = await post("/load_model", { path });
    const body = (await res.json()) as Record<string, any>;
    assert.equal(res.status, 422, `${name}: ${JSON.stringify(body)}`);
    assert.equal(body.code, "MODEL_INVALID");
    assert.match(body.message, reason);
  }

  before(async () => {
    const source = await tinyModel();
    dir = await mkdtemp(join(tmpdir(), "kekahyde-models-"));
    outside = await mkdtemp(join(tmpdir(), "kekahyde-outside-"));
    tiny = join(dir, "tiny.gguf");
    await copyFile(source, tiny);
    await copyFile(source, join(outside, "secret.gguf"));
    d = await startTestDaemon({
      apiKey: KEY,
      allowedHosts: ["kekahyde.lan"],
      allowedOrigins: ["http://localhost:5173"],
      modelsDirs: [dir],
      maxBodyBytes: 64 * 1024,
    });
    assert.equal((await post("/load_model", { path: tiny })).status, 200);
  });
  after(() => d?.close());

  describe("Host header (DNS rebinding)", () => {
    for (const host of ["evil.example", "evil.example:3000", "127.0.0.1.evil.example", "localhost.evil.example"]) {
      it(`refuses Host: ${host} with 403`, async () => {
        const res = await raw({ path: "/status", headers: { Host: host } });
        assert.equal(res.status, 403);
        assert.equal(res.json().code, "FORBIDDEN_HOST");
        assert.match(res.json().message, /--allowed-hosts/);
        await assertHealthy();
      });
    }
    for (const host of ["127.0.0.1", "localhost", "[::1]:3000", "kekahyde.lan:80", "api.localhost"]) {
      it(`accepts Host: ${host}`, async () => {
        assert.equal((await raw({ path: "/status", headers: { Host: host } })).status, 200);
      });
    }
    it("refuses a request without a Host header", async () => {
      const res = await raw({ path: "/status", headers: { Host: "" } });
      assert.ok([400, 403].includes(res.status), `status ${res.status}`);
    });
  });

  describe("Origin header (cross-site requests)", () => {
    it("refuses a foreign origin before doing anything", async () => {
      const res = await post("/run_prompt", { prompt: "abc" }, { origin: "https://evil.example" });
      assert.equal(res.status, 403);
      const body = (await res.json()) as Record<string, any>;
      assert.equal(body.code, "FORBIDDEN_ORIGIN");
      assert.equal(res.headers.get("access-control-allow-origin"), null);
      assert.equal((await (await get("/status")).json()).generation.prompt_tokens, 4, "nothing ran");
    });
    it("refuses Origin: null (files, sandboxed frames)", async () => {
      assert.equal((await get("/status").then(() => post("/stop", undefined, { origin: "null" }))).status, 403);
    });
    it("sends CORS headers to an allowed origin, and answers its preflight", async () => {
      const res = await fetch(d.url + "/status", { headers: { ...auth, origin: "http://localhost:5173" } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("access-control-allow-origin"), "http://localhost:5173");
      const preflight = await raw({
        method: "OPTIONS",
        path: "/run_prompt",
        headers: { Origin: "http://localhost:5173", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization" },
      });
      assert.equal(preflight.status, 204);
      assert.match(String(preflight.headers["access-control-allow-headers"]), /Authorization/);
      const foreign = await raw({ method: "OPTIONS", path: "/run_prompt", headers: { Origin: "https://evil.example", "Access-Control-Request-Method": "POST" } });
      assert.equal(foreign.status, 403);
    });
    it("accepts the daemon's own origin without CORS headers", async () => {
      const res = await fetch(d.url + "/status", { headers: { ...auth, origin: d.url } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("access-control-allow-origin"), null);
    });
  });

  describe("content type (simple cross-site posts)", () => {
    const json = JSON.stringify({ prompt: "abc", raw: true });
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]) {
      it(`refuses a body sent as '${type || "no type"}' with 415`, async () => {
        const headers: Record<string, string> = { "content-length": String(Buffer.byteLength(json)) };
        if (type) headers["content-type"] = type;
        const res = await raw({ method: "POST", path: "/run_prompt", headers, body: json });
        assert.equal(res.status, 415);
        assert.equal(res.json().code, "UNSUPPORTED_MEDIA_TYPE");
        await assertHealthy();
      });
    }
    it("accepts /stop with no body and no type", async () => {
      assert.equal((await raw({ method: "POST", path: "/stop" })).status, 200);
    });
  });

  describe("API key", () => {
    it("refuses a request without the key, with WWW-Authenticate", async () => {
      const res = await fetch(d.url + "/status");
      assert.equal(res.status, 401);
      assert.match(res.headers.get("www-authenticate") ?? "", /Bearer/);
      assert.equal((await res.json()).code, "UNAUTHORIZED");
    });
    it("refuses a wrong key, a key of another length and another scheme", async () => {
      for (const value of ["Bearer wrong", `Bearer ${KEY}x`, `Basic ${Buffer.from(`u:${KEY}`).toString("base64")}`, KEY]) {
        const res = await fetch(d.url + "/run_prompt", { method: "POST", headers: { authorization: value, "content-type": "application/json" }, body: '{"prompt":"x"}' });
        assert.equal(res.status, 401, value);
      }
      await assertHealthy();
    });
    it("leaves GET /health open, and it tells nothing else", async () => {
      const res = await fetch(d.url + "/health");
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { ok: true });
    });
  });

  describe("request bodies", () => {
    it("refuses a body over --max-body with 413, by Content-Length and when chunked", async () => {
      const big = JSON.stringify({ prompt: "a".repeat(70 * 1024) });
      const res = await post("/run_prompt", big);
      assert.equal(res.status, 413);
      assert.equal((await res.json()).code, "PAYLOAD_TOO_LARGE");
      const chunked = await raw({ method: "POST", path: "/run_prompt", headers: { "content-type": "application/json", "transfer-encoding": "chunked" }, body: big });
      assert.equal(chunked.status, 413);
      await assertHealthy();
    });
    const bodies: Array<[string, string, number]> = [
      ["malformed JSON", '{"prompt": ', 400],
      ["NaN", '{"prompt": "a", "temperature": NaN}', 400],
      ["a huge number", '{"prompt": "a", "temperature": 1e400}', 400],
      ["a huge integer", '{"prompt": "a", "max_tokens": 123456789012345678901234567890}', 400],
      ["wrong types", '{"prompt": {"a": 1}, "max_tokens": "10"}', 400],
      ["a JSON string", '"prompt"', 400],
      ["null", "null", 400],
      ["deep nesting", `{"prompt": ${"[".repeat(30_000)}${"]".repeat(30_000)}}`, 400],
      ["invalid UTF-8", Buffer.from([0x7b, 0x22, 0x70, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]).toString("latin1"), 400],
      ["a prototype-polluting key", '{"prompt": "a", "__proto__": {"raw": true}, "constructor": {"prototype": {"x": 1}}}', 200],
    ];
    for (const [what, body, status] of bodies) {
      it(`answers ${what} with ${status} and keeps serving`, async () => {
        const res = await post("/run_prompt", body);
        assert.equal(res.status, status, await res.clone().text());
        await res.text();
        assert.equal(({} as Record<string, unknown>).raw, undefined, "no prototype was polluted");
        await assertHealthy();
      });
    }
  });

  describe("model paths with --models-dir", () => {
    it("refuses traversal out of the folder with 403 naming the allowed folders", async () => {
      for (const path of [join(dir, "..", outside.split("/").pop()!, "secret.gguf"), join(outside, "secret.gguf"), "/etc/passwd", `${dir}/../../etc/passwd`]) {
        const res = await post("/load_model", { path });
        const body = (await res.json()) as Record<string, any>;
        assert.equal(res.status, 403, path);
        assert.equal(body.code, "MODEL_FORBIDDEN");
        assert.ok(body.message.includes(dir) || body.allowed_dirs.some((a: string) => a.endsWith(dir.split("/").pop()!)));
      }
      await assertHealthy();
    });
    it("refuses a symlink inside the folder that points outside it", async () => {
      const link = join(dir, "escape.gguf");
      await symlink(join(outside, "secret.gguf"), link);
      const res = await post("/load_model", { path: link });
      assert.equal(res.status, 403);
      await assertHealthy();
    });
    it("accepts a symlink that stays inside, and loads it by its real path", async () => {
      const link = join(dir, "alias.gguf");
      await symlink(tiny, link);
      const res = await post("/load_model", { path: link });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).model.path.endsWith("tiny.gguf"), true);
    });
    it("answers a missing file outside the folder with 403, not 404 (no probing)", async () => {
      assert.equal((await post("/load_model", { path: join(outside, "nope.gguf") })).status, 403);
      assert.equal((await post("/load_model", { path: join(dir, "nope.gguf") })).status, 404);
    });
  });

  describe("files that are not models", () => {
    it("refuses a directory, /dev/zero and a FIFO with 422", async () => {
      await mkdir(join(dir, "folder.gguf"));
      const fifo = join(dir, "pipe.gguf");
      execFileSync("mkfifo", [fifo]);
      for (const [path, kind] of [[join(dir, "folder.gguf"), /a directory/], [fifo, /a FIFO/]] as const) {
        const res = await post("/load_model", { path });
        assert.equal(res.status, 422);
        assert.match((await res.json()).message, kind);
      }
      const d2 = await startTestDaemon();
      try {
        const res = await d2.post("/load_model", { path: "/dev/zero" });
        assert.equal(res.status, 422);
        assert.match((await res.json()).message, /a device/);
        assert.equal((await d2.status()).state, "empty");
      } finally {
        await d2.close();
      }
      await assertHealthy();
    });
    it("refuses an empty file, wrong magic, random bytes", async () => {
      await refusedModel("empty.gguf", new Uint8Array(0), /too short/);
      await refusedModel("magic.gguf", "GGML this is not it", /not a GGUF file/);
      let seed = 7;
      const random = new Uint8Array(65536).map(() => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff);
      await refusedModel("random.gguf", random, /./);
      random.set([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0]);
      await refusedModel("random-magic.gguf", random, /./);
      await assertHealthy();
    });
    it("refuses a model cut at many offsets", async () => {
      const bytes = await readFile(tiny);
      for (const cut of [8, 24, 100, 4096, 20_000, bytes.length >> 1, bytes.length - 4]) {
        await refusedModel(`cut-${cut}.gguf`, bytes.subarray(0, cut), /truncated|too short|more than/);
      }
      await assertHealthy();
    });
    it("refuses absurd tensor and key/value counts without hanging", async () => {
      for (const [tensors, kvs] of [[1n << 60n, 0n], [0n, 1n << 60n], [0xffffffffffffffffn, 0xffffffffffffffffn]]) {
        const header = Buffer.alloc(64);
        header.writeUInt32LE(GGUF_MAGIC, 0);
        header.writeUInt32LE(3, 4);
        header.writeBigUInt64LE(tensors, 8);
        header.writeBigUInt64LE(kvs, 16);
        await refusedModel(`absurd-${tensors}-${kvs}.gguf`, header, /claims/);
      }
      await assertHealthy();
    });
    it("refuses a model too large for memory with 507 and both numbers", async () => {
      const spec = charModelSpec({ ...TINY_CHAR_MODEL, name: "huge", feedForwardLength: 16_000_000 });
      const { header, offsets, sizes } = encodeGgufHeader(spec);
      const path = join(dir, "huge.gguf");
      await writeFile(path, header);
      await truncate(path, header.length + Number(offsets.at(-1)! + sizes.at(-1)!)); // sparse: no disk used
      const res = await post("/load_model", { path });
      const body = (await res.json()) as Record<string, any>;
      assert.equal(res.status, 507, JSON.stringify(body));
      assert.equal(body.code, "INSUFFICIENT_MEMORY");
      assert.ok(body.needed_bytes > body.available_bytes);
      assert.match(body.message, /needs about [\d.]+ GiB .* but [\d.]+ GiB is available/);
      await assertHealthy();
    });
  });

  describe("floods and disconnects", () => {
    it("survives a flood of concurrent requests: every answer is 200 or 503, none fails", async () => {
      const runs = Array.from({ length: 40 }, (_, i) => post("/run_prompt", { prompt: String.fromCharCode(97 + (i % 26)), raw: true, max_tokens: 20 }));
      const reads = Array.from({ length: 300 }, () => get("/status"));
      const answers = await Promise.all([...runs, ...reads]);
      const statuses = new Set(answers.map((r) => r.status));
      for (const s of statuses) assert.ok([200, 503].includes(s), `status ${s}`);
      const served = answers.slice(0, 40).filter((r) => r.status === 200);
      assert.ok(served.length >= 17, `${served.length} generations served`);
      for (const [i, r] of answers.slice(0, 40).entries()) {
        const text = await r.text();
        if (r.status === 200) assert.equal(text, expectedContinuation(String.fromCharCode(97 + (i % 26)), 20));
      }
      await assertHealthy();
    });

    it("survives a client that disconnects mid-body, mid-headers, and in every state", async () => {
      // Mid-body: announces 1000 bytes, sends 10, leaves.
      const s1 = await rawSocket(d.url);
      s1.write(`POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt":`);
      s1.destroy();
      // Mid-headers.
      const s2 = await rawSocket(d.url);
      s2.write("POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty");
      s2.destroy();
      await assertHealthy();

      // While loading, while generating, while waiting in the queue, while streaming.
      const slow = join(dir, "slow.gguf");
      await copyFile(await slowModel(), slow);
      const loading = new AbortController();
      const load = post("/load_model", { path: slow }, {});
      void load;
      const loadGone = d.post("/load_model", { path: tiny }, auth, loading.signal).catch(() => null);
      loading.abort();
      await loadGone;
      await load;
      await waitUntil(async () => (await (await get("/status")).json()).state === "idle", 10_000, "idle after load");

      const gen = new AbortController();
      const running = d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 3000 }, auth, gen.signal).catch(() => null);
      await waitUntil(async () => (await (await get("/status")).json()).state === "generating", 10_000, "generating");
      const queued = new AbortController();
      const waiting = d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 3 }, auth, queued.signal).catch(() => null);
      await waitUntil(async () => (await (await get("/status")).json()).queue_length === 1, 10_000, "queued");
      queued.abort();
      gen.abort();
      await Promise.all([running, waiting]);

      const streaming = new AbortController();
      const stream = await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 3000, stream: true }, auth, streaming.signal);
      const reader = stream.body!.getReader();
      await reader.read();
      streaming.abort();
      await reader.read().catch(() => null);
      await waitUntil(async () => (await (await get("/status")).json()).state === "idle", 10_000, "idle after stream");

      await post("/load_model", { path: tiny });
      await assertHealthy();
    });

    it("ends a generation at its time limit with finish reason timeout", async () => {
      await post("/load_model", { path: join(dir, "slow.gguf") });
      const started = performance.now();
      const res = await post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5000, timeout_s: 0.3 });
      assert.equal(res.headers.get("x-finish-reason"), "timeout");
      const text = await res.text();
      assert.ok(text.length > 0 && text.length < 5000);
      assert.ok(performance.now() - started < 3000);
      await post("/load_model", { path: tiny });
      await assertHealthy();
    });
  });
});

describe("slow clients and rate limits", () => {
  it("closes a connection that never finishes its headers or its body", async () => {
    const d = await startTestDaemon({}, { headersMs: 500, requestMs: 1000 });
    try {
      const headers = await rawSocket(d.url);
      headers.write("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      const body = await rawSocket(d.url);
      body.write("POST /run_prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
      const started = performance.now();
      const [a, b] = await Promise.all([closed(headers), closed(body)]);
      assert.ok(performance.now() - started < 5000, "closed within the timeouts");
      assert.match(a + b, /408|^$/);
      assert.equal((await d.status()).state, "empty");
    } finally {
      await d.close();
    }
  });

  it("limits each client to N requests a minute, reads separately, with Retry-After", async () => {
    const d = await startTestDaemon({ rateLimit: 5 });
    try {
      const posts = [];
      for (let i = 0; i < 7; i++) posts.push((await d.post("/stop")).status);
      assert.deepEqual(posts, [200, 200, 200, 200, 200, 429, 429]);
      const limited = await d.post("/stop");
      assert.ok(Number(limited.headers.get("retry-after")) >= 1);
      assert.equal((await limited.json()).code, "RATE_LIMITED");
      const reads = await Promise.all(Array.from({ length: 20 }, () => d.get("/status")));
      assert.ok(reads.every((r) => r.status === 200), "reads have their own, larger budget");
    } finally {
      await d.close();
    }
  });

  it("refuses to listen on a non-loopback address without an API key", () => {
    assert.throws(() => checkExposure({ ...DEFAULTS, host: "0.0.0.0" }), /refusing to listen on 0.0.0.0 without an API key/);
    assert.doesNotThrow(() => checkExposure({ ...DEFAULTS, host: "0.0.0.0", apiKey: "k" }));
    assert.doesNotThrow(() => checkExposure({ ...DEFAULTS, host: "0.0.0.0", insecureNoApiKey: true }));
    assert.doesNotThrow(() => checkExposure({ ...DEFAULTS, host: "localhost" }));
  });
});
