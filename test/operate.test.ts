import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { ConfigError, DEFAULTS, parseServeArgs } from "../src/config.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { slowModel, tinyModel } from "../testing/fixtures.ts";

// Operating the daemon: metrics, configuration files, and the client commands against a running daemon.

const BIN = fileURLToPath(new URL("../bin/kekahyde.js", import.meta.url));

/** Runs `kekahyde VERB ...` as a user would, asynchronously (the daemon is in this process). */
function kekahyde(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("GET /metrics", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon();
  });
  after(() => d?.close());

  it("exposes requests and their handling time, tokens, speed, time to first token, queue, state, load time, CPU and memory in Prometheus format", async () => {
    await d.post("/load_model", { path: await tinyModel() });
    await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 20 });
    await d.get("/status");
    const res = await d.get("/metrics");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/plain/);
    const text = await res.text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1]);
    assert.equal(value(/^kekahyde_generated_tokens_total (\S+)$/m), 20);
    assert.equal(value(/^kekahyde_prompt_tokens_total (\S+)$/m), 4);
    assert.equal(value(/^kekahyde_generations_total\{finish_reason="length"\} (\S+)$/m), 1);
    assert.ok(value(/^kekahyde_generation_tokens_per_second (\S+)$/m) > 0);
    assert.equal(value(/^kekahyde_time_to_first_token_seconds_count (\S+)$/m), 1);
    assert.equal(value(/^kekahyde_model_load_seconds_count (\S+)$/m), 1);
    assert.equal(value(/^kekahyde_queue_length (\S+)$/m), 0);
    assert.equal(value(/^kekahyde_state\{state="idle"\} (\S+)$/m), 1);
    assert.equal(value(/^kekahyde_state\{state="generating"\} (\S+)$/m), 0);
    assert.equal(value(/^kekahyde_http_requests_total\{route="\/run_prompt",method="POST",status="200"\} (\S+)$/m), 1);
    assert.equal(value(/^kekahyde_http_request_duration_seconds_count\{route="\/status",method="GET"\} (\S+)$/m), 1);
    assert.ok(value(/^kekahyde_http_request_duration_seconds_sum\{route="\/run_prompt",method="POST"\} (\S+)$/m) > 0);
    assert.ok(value(/^kekahyde_process_resident_memory_bytes (\S+)$/m) > 0);
    assert.ok(value(/^kekahyde_process_cpu_seconds_total (\S+)$/m) > 0);
  });
});

describe("configuration file", () => {
  it("reads JSON and TOML with the flag names as keys; flags > environment > file > defaults", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kekahyde-config-"));
    const toml = join(dir, "config.toml");
    await writeFile(toml, 'port = 4100\nhost = "localhost"\nmodels-dir = ["/a", "/b"]\nmax-body = "2MiB"\ninsecure-no-api-key = true\n');
    const json = join(dir, "config.json");
    await writeFile(json, JSON.stringify({ port: 4200, "max-queue": 3, "log-level": "warn" }));

    const fromToml = parseServeArgs(["--config", toml], {}).config;
    assert.equal(fromToml.port, 4100);
    assert.equal(fromToml.host, "localhost");
    assert.deepEqual(fromToml.modelsDirs, ["/a", "/b"]);
    assert.equal(fromToml.maxBodyBytes, 2 * 1024 * 1024);
    assert.equal(fromToml.insecureNoApiKey, true);

    assert.equal(parseServeArgs([], { KEKAHYDE_CONFIG: json }).config.maxQueue, 3);
    assert.equal(parseServeArgs(["--config", json], { KEKAHYDE_PORT: "4300" }).config.port, 4300, "environment over file");
    assert.equal(parseServeArgs(["--config", json, "--port", "4400"], { KEKAHYDE_PORT: "4300" }).config.port, 4400, "flag over environment");
    assert.equal(parseServeArgs(["--config", json], {}).config.threads, DEFAULTS.threads, "defaults under everything");

    await writeFile(join(dir, "bad.json"), JSON.stringify({ prot: 1 }));
    assert.throws(() => parseServeArgs(["--config", join(dir, "bad.json")], {}), (e: Error) => e instanceof ConfigError && /unknown key "prot".*known keys: host, port/.test(e.message));
    await writeFile(join(dir, "broken.toml"), "port = ");
    assert.throws(() => parseServeArgs(["--config", join(dir, "broken.toml")], {}), /not valid TOML/);
    assert.throws(() => parseServeArgs(["--config", join(dir, "missing.json")], {}), /cannot read the config file/);
  });

  it("prints the merged configuration with --print-config, the API key masked", () => {
    const r = spawnSync(process.execPath, [BIN, "serve", "--print-config", "--port", "4500", "--api-key", "s3cret"], { encoding: "utf8", env: { ...process.env, KEKAHYDE_MAX_QUEUE: "7" } });
    assert.equal(r.status, 0, r.stderr);
    const printed = JSON.parse(r.stdout);
    assert.equal(printed.port, 4500);
    assert.equal(printed.maxQueue, 7);
    assert.equal(printed.apiKey, "(set)");
    assert.doesNotMatch(r.stdout, /s3cret/);
  });
});

describe("client commands against a running daemon", () => {
  let d: TestDaemon;
  let port: string;
  before(async () => {
    d = await startTestDaemon({ apiKey: "k" });
    port = new URL(d.url).port;
  });
  after(() => d?.close());
  const env = () => ({ KEKAHYDE_PORT: port, KEKAHYDE_API_KEY: "k" });

  it("say clearly when no daemon answers", async () => {
    const free = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const r = await kekahyde(["status", "--port", String(free)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`No Kekahyde daemon answers at http://127\\.0\\.0\\.1:${free}\\. Start one with \`kekahyde serve\``));
  });

  it("load a model, show the status, run a prompt streaming, stop and unload", async () => {
    const load = await kekahyde(["load", await tinyModel()], env());
    assert.equal(load.code, 0, load.stderr);
    assert.match(load.stdout, /Loaded kekahyde-char-tiny \(llama, 5 MiB, context 2048\)/);

    const status = await kekahyde(["status"], env());
    assert.match(status.stdout, /state\s+idle/);
    assert.match(status.stdout, /model\s+kekahyde-char-tiny/);
    const json = JSON.parse((await kekahyde(["status", "--json"], env())).stdout);
    assert.equal(json.model_loaded, true);

    const run = await kekahyde(["run", "abc", "--raw", "--max-tokens", "9"], env());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "defghijkl\n");
    const chat = await kekahyde(["run", "Explain recursion", "--max-tokens", "5"], env());
    assert.equal(chat.stdout, " abcd\n");

    assert.match((await kekahyde(["stop"], env())).stdout, /nothing was running/);
    assert.match((await kekahyde(["unload"], env())).stdout, /^unloaded/);
    assert.match((await kekahyde(["unload"], env())).stdout, /no model was loaded/);
  });

  it("stop a running generation from another terminal", async () => {
    await kekahyde(["load", await slowModel()], env());
    const running = kekahyde(["run", "abc", "--raw", "--max-tokens", "5000"], env());
    await waitUntil(async () => ((await (await fetch(`${d.url}/status`, { headers: { authorization: "Bearer k" } })).json()) as { state: string }).state === "generating", 5_000, "generating");
    const stop = await kekahyde(["stop"], env());
    assert.match(stop.stdout, /^stopped/);
    const r = await running;
    assert.equal(r.code, 0);
    assert.ok(r.stdout.length > 1 && r.stdout.length < 5000);
  });

  it("report the daemon's refusal and exit 1", async () => {
    const r = await kekahyde(["load", "/no/such/model.gguf"], env());
    assert.equal(r.code, 1);
    assert.match(r.stderr, /kekahyde load: 404: No file at \/no\/such\/model\.gguf/);
    const wrongKey = await kekahyde(["status"], { KEKAHYDE_PORT: port, KEKAHYDE_API_KEY: "nope" });
    assert.match(wrongKey.stderr, /401: The API key is wrong/);
  });
});

describe("draining before a stop", () => {
  it("answers /health with 503 draining for --drain-seconds while it still serves, then stops", async () => {
    const d = await startTestDaemon({ drainSeconds: 1 });
    assert.equal((await d.post("/load_model", { path: await tinyModel() })).status, 200);
    const closed = d.close();
    const health = await d.get("/health");
    assert.equal(health.status, 503);
    assert.deepEqual(await health.json(), { ok: false, draining: true });
    const served = await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 3 });
    assert.equal(await served.text(), "def", "a request that still arrives is served");
    const started = performance.now();
    await closed;
    assert.ok(performance.now() - started < 5_000);
  });
});
