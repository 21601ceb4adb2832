import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { joinMultiline } from "../src/cli/chat.ts";
import { CLIENT_VERBS, clientVerbHelp } from "../src/cli/client.ts";
import { humanBytes, humanTime, table } from "../src/cli/format.ts";
import { formatList, formatPs, formatShow, processor, until } from "../src/cli/models.ts";
import { ConfigError, DEFAULTS, OPTIONS, parseServeArgs } from "../src/config.ts";
import { defaultThreadCount } from "../src/engine/threads.ts";
import { slowModel, tinyModel } from "../testing/fixtures.ts";
import { waitUntil } from "./helpers/daemon.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = fileURLToPath(new URL("../bin/kekahyde.js", import.meta.url));

describe("configuration", () => {
  it("defaults to 127.0.0.1:3000 with threads chosen from the machine", () => {
    const { config } = parseServeArgs([], {});
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.port, 3000);
    assert.equal(config.threads, null);
    assert.equal(config.model, null);
  });

  it("takes KEKAHYDE_* environment variables, and flags over them", () => {
    const env = { KEKAHYDE_HOST: "localhost", KEKAHYDE_PORT: "4000", KEKAHYDE_THREADS: "3" };
    assert.deepEqual(
      { ...parseServeArgs([], env).config },
      { ...DEFAULTS, host: "localhost", port: 4000, threads: 3 },
    );
    const { config } = parseServeArgs(["--port", "3123", "--host", "127.0.0.1", "--model", "/m.gguf", "--gpu", "off"], env);
    assert.equal(config.port, 3123);
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.model, "/m.gguf");
    assert.equal(config.gpu, "off");
    assert.equal(config.threads, 3);
    assert.equal(DEFAULTS.flashAttention, "auto");
    assert.equal(parseServeArgs(["--flash-attention", "off"], {}).config.flashAttention, "off");
    assert.equal(parseServeArgs([], { KEKAHYDE_FLASH_ATTENTION: "on" }).config.flashAttention, "on");
  });

  it("reads the several-models options: counts, memory budgets and Ollama-style durations", () => {
    const { config } = parseServeArgs(["--max-models", "3", "--max-memory", "12GiB", "--keep-alive", "1h30m", "--parallel", "4"], {});
    assert.equal(config.maxModels, 3);
    assert.deepEqual(config.maxMemory, { bytes: 12 * 1024 ** 3 });
    assert.equal(config.keepAliveMs, 90 * 60_000);
    assert.equal(config.parallel, 4);
    assert.deepEqual(parseServeArgs([], { KEKAHYDE_MAX_MEMORY: "80%", KEKAHYDE_KEEP_ALIVE: "-1" }).config.maxMemory, { fraction: 0.8 });
    assert.equal(parseServeArgs([], { KEKAHYDE_KEEP_ALIVE: "-1" }).config.keepAliveMs, -1);
    assert.equal(parseServeArgs(["--keep-alive", "0"], {}).config.keepAliveMs, 0);
    assert.equal(parseServeArgs(["--keep-alive", "30"], {}).config.keepAliveMs, 30_000);
    assert.deepEqual([DEFAULTS.maxModels, DEFAULTS.keepAliveMs, DEFAULTS.parallel, DEFAULTS.maxMemory], [1, 300_000, 1, { fraction: 0.9 }]);
    assert.throws(() => parseServeArgs(["--keep-alive", "soon"], {}), /--keep-alive must be seconds, or a duration such as "30s"/);
    assert.throws(() => parseServeArgs(["--max-memory", "150%"], {}), /--max-memory must be a percentage above 0% and at most 100%/);
    assert.throws(() => parseServeArgs(["--max-models", "0"], {}), /--max-models must be an integer from 1 to 64/);
  });

  it("refuses bad values with a message naming the option", () => {
    assert.throws(() => parseServeArgs(["--port", "70000"], {}), (e: Error) => e instanceof ConfigError && /--port must be an integer from 0 to 65535/.test(e.message));
    assert.throws(() => parseServeArgs([], { KEKAHYDE_PORT: "abc" }), /KEKAHYDE_PORT must be an integer/);
    assert.throws(() => parseServeArgs(["--gpu", "cuda"], {}), /--gpu must be one of auto, off/);
    assert.throws(() => parseServeArgs(["--flash-attention", "yes"], {}), /--flash-attention must be one of auto, on, off/);
    assert.throws(() => parseServeArgs(["--bogus"], {}), ConfigError);
  });

  it("never uses more threads than physical cores, and leaves one to the event loop", () => {
    assert.equal(defaultThreadCount(1, 1), 1);
    assert.equal(defaultThreadCount(2, 2), 1);
    assert.equal(defaultThreadCount(4, 8), 3);
    assert.equal(defaultThreadCount(16, 8), 7);
    assert.equal(defaultThreadCount(0, 4), 3, "unknown physical count falls back to logical");
  });
});

describe("what the client commands write", () => {
  const now = Date.parse("2026-11-26T12:00:00Z");
  const ago = (ms: number) => new Date(now - ms).toISOString();

  it("sizes and times as ollama writes them", () => {
    assert.deepEqual([0, 999, 1000, 5_036_864, 12_400_000, 2_000_000_000, 4_680_000_000].map(humanBytes), ["0 B", "999 B", "1 KB", "5.0 MB", "12 MB", "2 GB", "4.7 GB"]);
    assert.deepEqual(
      [500, 1000, 42_000, 61_000, 3 * 60_000, 60 * 60_000, 5 * 3_600_000, 3 * 86_400_000, 15 * 86_400_000].map((ms) => humanTime(new Date(now - ms), now)),
      ["Less than a second ago", "1 second ago", "42 seconds ago", "About a minute ago", "3 minutes ago", "About an hour ago", "5 hours ago", "3 days ago", "2 weeks ago"],
    );
    assert.equal(humanTime(new Date(now + 4.5 * 60_000), now), "4 minutes from now");
  });

  it("list and ps: aligned columns, the digest's first 12 hex digits, where the model runs and until when", () => {
    const model = { name: "tiny:latest", model: "tiny:latest", size: 5_036_864, digest: "sha256:0123456789abcdef0123", modified_at: ago(3 * 60_000) };
    assert.equal(formatList([model, { ...model, name: "a-much-longer-name:q8", digest: "", size: 2e9 }], now), [
      "NAME                    ID             SIZE     MODIFIED",
      "tiny:latest             0123456789ab   5.0 MB   3 minutes ago",
      "a-much-longer-name:q8                  2 GB     3 minutes ago",
    ].join("\n"));
    const loaded = { ...model, size_vram: 0, context_length: 2048 };
    assert.equal(formatPs([{ ...loaded, expires_at: new Date(now + 299_000).toISOString() }, { ...loaded, name: "f", expires_at: "2318-11-29T00:00:00Z" }, { ...loaded, name: "g", expires_at: ago(1000) }], now), [
      "NAME          ID             SIZE     PROCESSOR   CONTEXT   UNTIL",
      "tiny:latest   0123456789ab   5.0 MB   100% CPU    2048      4 minutes from now",
      "f             0123456789ab   5.0 MB   100% CPU    2048      Forever",
      "g             0123456789ab   5.0 MB   100% CPU    2048      Stopping...",
    ].join("\n"));
    assert.deepEqual([processor(100, 0), processor(100, 100), processor(100, 25), processor(100, 200)], ["100% CPU", "100% GPU", "75%/25% CPU/GPU", "Unknown"]);
    assert.equal(until(null, now), "Forever");
    assert.equal(table(["A", "B"], [["x", ""]]), "A   B\nx");
  });

  it("show: the model's facts, capabilities and parameters in ollama's sections", () => {
    const text = formatShow({
      details: { family: "llama", parameter_size: "8.0B", quantization_level: "Q4_K_M" },
      model_info: { "general.architecture": "llama", "general.parameter_count": 8_030_261_248, "llama.context_length": 131072, "llama.embedding_length": 4096 },
      capabilities: ["completion", "tools"],
      parameters: 'stop                           "<|eot_id|>"\nnum_ctx 4096',
    });
    assert.equal(text, [
      "  Model",
      "    architecture        llama",
      "    parameters          8.0B",
      "    context length      131072",
      "    embedding length    4096",
      "    quantization        Q4_K_M",
      "",
      "  Capabilities",
      "    completion",
      "    tools",
      "",
      "  Parameters",
      '    stop       "<|eot_id|>"',
      "    num_ctx    4096",
      "",
    ].join("\n"));
    assert.match(formatShow({ model_info: { "general.architecture": "qwen2", "general.parameter_count": 494_032_768 } }), /\n {4}parameters {6}494\.03M\n/);
  });

  it('a """ message keeps its lines, without the empty rest of the opening and closing lines', () => {
    assert.equal(joinMultiline(["", "ab", "cd", ""]), "ab\ncd");
    assert.equal(joinMultiline(["ab", "cd"]), "ab\ncd");
    assert.equal(joinMultiline(["", "", "x", ""]), "\nx");
  });
});

describe("the kekahyde command", () => {
  it("has help for every verb, and the overview names them all", () => {
    const overview = spawnSync(process.execPath, [BIN, "--help"], { encoding: "utf8" });
    assert.equal(overview.status, 0, overview.stderr);
    for (const verb of CLIENT_VERBS) {
      assert.match(overview.stdout, new RegExp(`kekahyde ${verb}\\b`));
      assert.match(clientVerbHelp(verb), new RegExp(`^Usage:[\\s\\S]*kekahyde ${verb}\\b[\\s\\S]*--host, --port, --api-key and --config`));
    }
    const r = spawnSync(process.execPath, [BIN, "run", "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const run = r.stdout;
    assert.equal(run, `${clientVerbHelp("run")}\n`);
    for (const piece of ["kekahyde run NAME ", '"""', "Ctrl-C", "Ctrl-D", "/bye", "/clear", "names no", "POST /run_prompt"]) assert.ok(run.includes(piece), piece);
    const bad = spawnSync(process.execPath, [BIN, "list", "--raw"], { encoding: "utf8" });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /kekahyde: Unknown option '--raw'.*\(kekahyde list --help\)/);
  });

  it("explains every option with --help", () => {
    const r = spawnSync(process.execPath, [BIN, "serve", "--help"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    for (const o of OPTIONS) {
      assert.match(r.stdout, new RegExp(`--${o.flag}`));
      assert.match(r.stdout, new RegExp(o.env));
    }
    assert.match(r.stdout, /SIGINT/);
  });

  it("works as `npm start -- --help`", () => {
    const r = spawnSync("npm", ["start", "--silent", "--", "--help"], { cwd: ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Usage: kekahyde serve/);
  });

  it("writes the README's demo model with `npm run demo-model`, and the daemon runs it", async () => {
    const path = join(await mkdtemp(join(tmpdir(), "kekahyde-demo-")), "demo.gguf");
    const r = spawnSync("npm", ["run", "--silent", "demo-model", "--", path], { cwd: ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wrote .*demo\.gguf/);
    const { startTestDaemon } = await import("./helpers/daemon.ts");
    const d = await startTestDaemon();
    try {
      assert.equal((await d.post("/load_model", { path })).status, 200);
      assert.equal(await (await d.post("/run_prompt", { prompt: "Explain recursion", raw: true, max_tokens: 20 })).text(), "opqrstuvwxyzabcdefgh");
    } finally {
      await d.close();
    }
  });

  it("exits 2 with a clear message on a bad option", () => {
    const r = spawnSync(process.execPath, [BIN, "serve", "--port", "nope"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /kekahyde: --port must be an integer/);
  });

  describe("as a daemon process", () => {
    let tiny: string;
    let slow: string;
    before(async () => {
      [tiny, slow] = await Promise.all([tinyModel(), slowModel()]);
    });

    const children: ChildProcess[] = [];
    after(() => {
      for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    });

    /** Starts `kekahyde serve`, collecting its JSON log lines; resolves once it listens. */
    async function startProcess(args: string[], env: Record<string, string> = {}) {
      const child = spawn(process.execPath, [BIN, "serve", ...args], {
        env: { ...process.env, KEKAHYDE_GPU: "off", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.push(child);
      const lines: Array<Record<string, any>> = [];
      createInterface({ input: child.stdout }).on("line", (line) => lines.push(JSON.parse(line)));
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const waitForLog = async (event: string, timeoutMs = 20_000) => {
        const find = () => lines.find((l) => l.event === event);
        // Until the line comes or the daemon has exited; either way the error below says what it wrote on stderr.
        await waitUntil(() => find() !== undefined || child.exitCode !== null, timeoutMs, `a "${event}" log line`).catch(() => {});
        const found = find();
        if (found) return found;
        throw new Error(`no "${event}" log line; stderr: ${stderr}`);
      };
      const listening = await waitForLog("listening");
      return { child, lines, waitForLog, url: listening.url as string };
    }

    async function exitOf(child: ChildProcess, timeoutMs = 15_000): Promise<number | null> {
      if (child.exitCode !== null) return child.exitCode;
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const [code] = await once(child, "exit");
      clearTimeout(timer);
      return code as number | null;
    }

    it("listens where KEKAHYDE_HOST/KEKAHYDE_PORT say, loads --model at start-up, and shuts down cleanly on SIGTERM", async () => {
      const d = await startProcess(["--model", tiny], { KEKAHYDE_HOST: "127.0.0.1", KEKAHYDE_PORT: "0" });
      assert.match(d.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      await d.waitForLog("model_loaded");
      const status = (await (await fetch(`${d.url}/status`)).json()) as Record<string, any>;
      assert.equal(status.state, "idle");
      assert.equal(status.model.path, tiny);
      const run = await fetch(`${d.url}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"prompt":"abc","raw":true,"max_tokens":5}' });
      assert.equal(await run.text(), "defgh");

      d.child.kill("SIGTERM");
      assert.equal(await exitOf(d.child), 0);
      const events = d.lines.map((l) => l.event);
      assert.ok(events.includes("signal") && events.includes("stopped"), events.join(","));
      const last = d.lines.filter((l) => l.event === "state").at(-1);
      assert.equal(last?.to, "stopped");
    });

    it("on SIGINT during a generation, answers the request, frees the model and exits 0", async () => {
      const d = await startProcess(["--port", "0", "--model", slow]);
      await d.waitForLog("model_loaded");
      const running = fetch(`${d.url}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"prompt":"abc","raw":true,"max_tokens":5000}' });
      await waitUntil(async () => ((await (await fetch(`${d.url}/status`)).json()) as Record<string, any>).state === "generating", 10_000, "generating");
      d.child.kill("SIGINT");
      const res = await running;
      assert.equal(res.status, 503);
      assert.match(((await res.json()) as { message: string }).message, /shutting down/);
      assert.equal(await exitOf(d.child), 0);
    });
  });
});
