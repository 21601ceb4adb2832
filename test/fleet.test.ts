import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFile, link, mkdir, rm } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { agentReply, daemonLoad, startAgentCheck, type DaemonLoad } from "../src/fleet/agentCheck.ts";
import { bindAddress, daemonCatalogue, fleetConfig, modelAliases, parseDaemonUrl, runFleetConfig } from "../src/fleet/haproxyConfig.ts";
import { expectedChatReply, expectedContinuation } from "../src/gguf/charModel.ts";
import { freePort, killStartedDaemons, spawnDaemon, type DaemonProcess } from "../testing/daemonProcess.ts";
import { FIXTURES, skipModel, slowModel, tinyModel } from "../testing/fixtures.ts";
import { checkConfig, eventually, findHaproxy, haproxyDir, killStartedHaproxies, startHaproxy, type Haproxy } from "../testing/haproxy.ts";

// A fleet of daemons behind HAProxy (docs/scale-out.md): the agent, the generated config, and three real
// daemons behind the real proxy on loopback. Every loop here is bounded (a count or a deadline).
// FLEET_TIMES=1 prints how long the daemons took to start and load; FLEET_HAPROXY_LOG=1 makes HAProxy log
// every request (a failing assertion about the proxy shows its log).

const HAPROXY = findHaproxy();
const NO_HAPROXY = HAPROXY.path === null ? HAPROXY.why : false;
const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

/** One line from an agent on `port`, as HAProxy reads it (after sending its `agent-send` string, if any). */
function askAgent(port: number, send?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => send && socket.write(send));
    let text = "";
    socket.setTimeout(3_000, () => socket.destroy(new Error("the agent did not answer")));
    socket.on("data", (d) => (text += String(d)));
    socket.on("end", () => resolve(text));
    socket.on("error", reject);
  });
}

const load = (over: Partial<DaemonLoad>): DaemonLoad => ({ draining: false, slots: 2, freeSlots: 2, queued: 0, maxQueue: 4, ...over });

describe("fleet: the agent HAProxy asks for each daemon's load", () => {
  it("answers drain while draining, whatever the load", () => {
    assert.equal(agentReply(load({ draining: true })), "drain\n");
    assert.equal(agentReply(load({ draining: true, freeSlots: 0, queued: 4 })), "drain\n");
  });

  it("weighs a daemon by the share of its slots that are free, 0 with none free (whatever its queue), at least 1% with one", () => {
    const weight = (l: Partial<DaemonLoad>) => Number(/^ready up (\d+)%\n$/.exec(agentReply(load(l)))![1]);
    assert.equal(weight({ freeSlots: 2 }), 100);
    assert.equal(weight({ freeSlots: 1 }), 50);
    assert.equal(weight({ slots: 4, freeSlots: 1 }), 25);
    assert.equal(weight({ slots: 300, freeSlots: 1 }), 1, "one free slot of many still counts");
    assert.equal(weight({ freeSlots: 0, queued: 0 }), 0);
    assert.equal(weight({ freeSlots: 0, queued: 4 }), 0);
    assert.equal(weight({ freeSlots: 0, queued: 0, maxQueue: 0 }), 0);
    assert.equal(weight({ slots: 0, freeSlots: 0 }), 0);
    assert.equal(weight({ slots: 2, freeSlots: 5 }), 100, "never above 100%");
  });

  it("computes the load from /status's models: slots are the sum of --parallel, one free slot when none is loaded; or one model's", () => {
    assert.deepEqual(daemonLoad([], { draining: false, maxQueue: 16 }), { draining: false, slots: 1, freeSlots: 1, queued: 0, maxQueue: 16 });
    assert.deepEqual(
      daemonLoad(
        [
          { parallel: 2, running: 2, queue_length: 3 },
          { parallel: 1, running: 0, queue_length: 0 },
        ],
        { draining: true, maxQueue: 4 },
      ),
      { draining: true, slots: 3, freeSlots: 1, queued: 3, maxQueue: 4 },
    );
    const models = [
      { name: "slow", parallel: 2, running: 2, queue_length: 0 },
      { name: "tiny", parallel: 2, running: 0, queue_length: 0 },
    ];
    assert.deepEqual(daemonLoad(models, { draining: false, maxQueue: 0, model: "slow" }), { draining: false, slots: 2, freeSlots: 0, queued: 0, maxQueue: 0 });
    assert.deepEqual(daemonLoad(models, { draining: false, maxQueue: 0, model: "tiny:latest" }), { draining: false, slots: 2, freeSlots: 2, queued: 0, maxQueue: 0 });
    assert.deepEqual(daemonLoad(models, { draining: false, maxQueue: 0, model: "other" }), { draining: false, slots: 4, freeSlots: 2, queued: 0, maxQueue: 0 }, "a model not loaded: the whole daemon");
  });

  it("answers every TCP connection with one line from the current load, for the model HAProxy names (agent-send) or the whole daemon, then closes", async () => {
    let current = load({ freeSlots: 1 });
    const asked: Array<string | undefined> = [];
    const agent = await startAgentCheck({
      host: "127.0.0.1",
      port: 0,
      load: (model) => {
        asked.push(model);
        return model === "slow" ? load({ freeSlots: 0, maxQueue: 0 }) : current;
      },
    });
    try {
      assert.equal(await askAgent(agent.port), "ready up 50%\n");
      assert.equal(await askAgent(agent.port, "slow\n"), "ready up 0%\n");
      assert.equal(await askAgent(agent.port, "tiny:latest\r\n"), "ready up 50%\n");
      assert.equal(await askAgent(agent.port, "bad name!\n"), "ready up 50%\n");
      assert.equal(await askAgent(agent.port, "\n"), "ready up 50%\n");
      assert.deepEqual(asked, [undefined, "slow", "tiny:latest", undefined, undefined]);
      current = load({ draining: true });
      assert.equal(await askAgent(agent.port), "drain\n");
      current = { ...current, draining: false };
      const answers = await Promise.all(Array.from({ length: 20 }, () => askAgent(agent.port)));
      assert.ok(answers.every((a) => a === "ready up 100%\n"));
    } finally {
      await agent.close();
    }
    await assert.rejects(askAgent(agent.port), /ECONNREFUSED/);
  });
});

/** A fake daemon's catalogue, for the config tests (no daemon needed). */
function fakeFetch(catalogues: Record<string, string[] | "down" | 401 | "tags-only">): typeof fetch {
  const answer = (input: string | URL | Request, init?: RequestInit): Response => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const base = `${url.protocol}//${url.host}`;
    const entry = catalogues[base];
    if (entry === undefined || entry === "down") throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED") });
    if (entry === 401) return new Response("{}", { status: init && new Headers(init.headers).get("authorization") === "Bearer k" ? 200 : 401 });
    if (entry === "tags-only") {
      if (url.pathname === "/v1/models") return new Response("{}", { status: 404 });
      return Response.json({ models: [{ name: "llama3:8b" }, { name: "qwen:latest" }] });
    }
    return Response.json({ object: "list", data: entry.map((id) => ({ id, object: "model" })) });
  };
  // What `answer` throws (an unreachable daemon) becomes the rejection, as with fetch.
  return (input, init) => new Promise((resolve) => resolve(answer(input, init)));
}

describe("fleet: kekahyde fleet-config", () => {
  const catalogues = { "http://10.0.0.5:3000": ["tiny", "llama3:8b", "bad name!"], "http://10.0.0.6:3000": ["tiny", "skip"], "http://10.0.0.7:3000": [] as string[] };

  it("writes one backend per model holding exactly the daemons that list it, and a default backend with all", async () => {
    const config = await fleetConfig({ listen: "0.0.0.0:8080", daemons: Object.keys(catalogues), agentPort: 3001, fetch: fakeFetch(catalogues) });
    const section = (name: string) => {
      const start = config.indexOf(`\nbackend ${name}\n`);
      assert.ok(start >= 0, `no backend ${name}`);
      const end = config.indexOf("\n\n", start + 1);
      return config.slice(start, end);
    };
    const servers = (name: string) => [...section(name).matchAll(/^\s+server (d\d) /gm)].map((m) => m[1]);
    assert.deepEqual(servers("model_tiny"), ["d1", "d2"]);
    assert.deepEqual(servers("model_skip"), ["d2"]);
    assert.deepEqual(servers("model_llama3:8b"), ["d1"]);
    assert.deepEqual(servers("fleet_default"), ["d1", "d2", "d3"]);
    assert.match(config, /use_backend model_tiny if \{ var\(txn\.model\) -m str tiny tiny:latest \}/);
    assert.match(config, /use_backend model_llama3:8b if \{ var\(txn\.model\) -m str llama3:8b \}/);
    assert.match(config, /option http-buffer-request/);
    assert.match(config, /req\.body,json_query\('\$\.model'\)/);
    assert.match(config, /retry-on conn-failure empty-response 502 503/);
    assert.match(config, /^\s+bind 0\.0\.0\.0:8080$/m);
    assert.match(config, /server d3 10\.0\.0\.7:3000 check/);
    assert.match(config, /agent-check agent-addr 10\.0\.0\.5 agent-port 3001 agent-send "tiny\\n"/);
    assert.match(config, /NOTE: http:\/\/10\.0\.0\.5:3000 lists "bad name!"/, "a name HAProxy cannot carry is left out, and said so");
    assert.doesNotMatch(config, /model_bad/);
  });

  it("is accepted by haproxy -c, with and without agents", { skip: NO_HAPROXY }, async () => {
    for (const agentPort of [3001, undefined]) {
      const config = await fleetConfig({ listen: "127.0.0.1:8080", daemons: Object.keys(catalogues), agentPort, fetch: fakeFetch(catalogues), statsSocket: "/tmp/x.sock" });
      const checked = await checkConfig(HAPROXY.path!, config);
      assert.ok(checked.ok, checked.output);
      assert.doesNotMatch(checked.output, /WARNING/, checked.output);
      assert.equal(/agent-check/.test(config), agentPort !== undefined);
    }
  });

  it("reads Ollama's /api/tags when /v1/models is missing, and names an unreachable daemon or a missing API key", async () => {
    assert.deepEqual(await daemonCatalogue("http://h:1", { fetch: fakeFetch({ "http://h:1": "tags-only" }) }), { models: ["llama3:8b", "qwen"], skipped: [] });
    await assert.rejects(daemonCatalogue("http://h:1", { fetch: fakeFetch({}) }), /cannot read the models of http:\/\/h:1: .*ECONNREFUSED/);
    await assert.rejects(daemonCatalogue("http://h:1", { fetch: fakeFetch({ "http://h:1": 401 }) }), /401: the daemon has an API key; pass it with --api-key/);
  });

  it("parses its arguments: --listen, repeated --daemon and --agent-port, --help; usage errors exit 2, an unreachable daemon 1", async () => {
    const io = () => {
      const out = { stdout: "", stderr: "" };
      return { out, io: { stdout: (s: string) => void (out.stdout += s), stderr: (s: string) => void (out.stderr += s) } };
    };
    let r = io();
    assert.equal(await runFleetConfig(["--help"], r.io), 0);
    assert.match(r.out.stdout, /Usage: kekahyde fleet-config --listen HOST:PORT --daemon URL/);
    for (const [argv, message] of [
      [["--daemon", "http://a:1"], /--listen HOST:PORT is required/],
      [["--listen", "0.0.0.0:8080"], /at least one --daemon/],
      [["--listen", "nonsense", "--daemon", "http://a:1"], /--listen must be HOST:PORT/],
      [["--listen", ":8080", "--daemon", "https://a:1"], /only http:\/\/ daemons/],
      [["--listen", ":8080", "--daemon", "http://a:1", "--daemon", "http://b:1", "--agent-port", "1", "--agent-port", "2", "--agent-port", "3"], /once per --daemon \(2\), not 3 times/],
      [["--listen", ":8080", "--daemon", "http://a:1", "--agent-port", "0"], /--agent-port must be a port/],
      [["--listen", ":8080", "--frobnicate"], /Unknown option '--frobnicate'/],
    ] as const) {
      r = io();
      assert.equal(await runFleetConfig([...argv], r.io), 2, `${argv.join(" ")}: ${r.out.stderr}`);
      assert.match(r.out.stderr, message);
      assert.equal(r.out.stdout, "");
    }
    r = io();
    const port = await freePort();
    assert.equal(await runFleetConfig(["--listen", ":8080", "--daemon", `http://127.0.0.1:${port}`], r.io), 1);
    assert.match(r.out.stderr, new RegExp(`cannot read the models of http://127.0.0.1:${port}`));
    assert.equal(bindAddress("[::]:8080"), ":::8080");
    assert.equal(bindAddress("*:8080"), ":8080");
    assert.deepEqual(parseDaemonUrl("10.0.0.5:3000"), { url: "http://10.0.0.5:3000", host: "10.0.0.5", port: 3000, address: "10.0.0.5:3000" });
    assert.deepEqual(modelAliases("llama3:8b"), ["llama3:8b"]);
    assert.deepEqual(modelAliases("qwen"), ["qwen", "qwen:latest"]);
  });
});

// ── Three daemons behind the real HAProxy ─────────────────────────────────────────────────────────────────

interface Answer {
  status: number;
  text: string;
  daemon: string | null;
  id: string | null;
  finish: string | null;
}

/** POST /run_prompt through `base` (greedy, raw), read whole. */
async function complete(base: string, model: string, maxTokens: number, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Answer> {
  const r = await fetch(`${base}/run_prompt`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model, prompt: "abc", raw: true, max_tokens: maxTokens, temperature: 0 }),
    signal,
  });
  return { status: r.status, text: await r.text(), daemon: r.headers.get("x-kekahyde-daemon"), id: r.headers.get("x-request-id"), finish: r.headers.get("x-finish-reason") };
}

/**
 * Where the daemon's log is now, once every request it has answered is in it (its log lines reach us
 * asynchronously): a POST /stop of an unknown id, logged after them, marks the place.
 */
async function logMark(d: DaemonProcess): Promise<number> {
  const marks = () => d.stdout().split('"path":"/stop"').length;
  const before = marks();
  await d.post("/stop", { id: `log-mark-${before}` });
  await eventually(() => Promise.resolve(marks() > before), 5_000, "the daemon's log line");
  return d.stdout().length;
}

/** Requests the daemon logged with this status since `from` (an index into its stdout). */
function loggedRequests(d: DaemonProcess, status: number, from = 0): number {
  let n = 0;
  for (const line of d.stdout().slice(from).split("\n")) {
    if (!line.includes('"event":"request"')) continue;
    try {
      const entry = JSON.parse(line) as { path?: string; status?: number };
      if (entry.status === status && entry.path === "/run_prompt") n++;
    } catch {
      // a line still being written
    }
  }
  return n;
}

const running = async (d: DaemonProcess): Promise<number> => ((await d.status()).models as Array<{ running: number }>).reduce((a, m) => a + m.running, 0);

describe("fleet: three daemons behind HAProxy", { skip: NO_HAPROXY }, () => {
  // d1: tiny, skip    d2: tiny, slow    d3: slow
  const CATALOGUES: ReadonlyArray<ReadonlyArray<"tiny" | "skip" | "slow">> = [["tiny", "skip"], ["tiny", "slow"], ["slow"]];
  const HOLDERS: Record<string, string[]> = { tiny: ["d1", "d2"], skip: ["d1"], slow: ["d2", "d3"] };
  const dirs = join(FIXTURES, `fleet-${process.pid}`);
  let daemons: DaemonProcess[] = [];
  let agentPorts: number[] = [];
  let proxy: Haproxy;
  let base: string;
  const byName = (name: string) => daemons[Number(name.slice(1)) - 1];

  /** The config for these daemons (with their agents unless told otherwise), as `kekahyde fleet-config` prints it. */
  async function generate(listen: string, socket: string, options: { agents?: boolean; only?: DaemonProcess[] } = {}): Promise<string> {
    const members = options.only ?? daemons;
    const argv = ["--listen", listen, "--stats-socket", socket];
    for (const d of members) argv.push("--daemon", d.url);
    if (options.agents !== false) for (const d of members) argv.push("--agent-port", String(agentPorts[daemons.indexOf(d)]));
    let stdout = "";
    let stderr = "";
    const code = await runFleetConfig(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
    assert.equal(code, 0, stderr);
    return stdout;
  }

  async function startProxy(options: { agents?: boolean } = {}): Promise<Haproxy> {
    const port = await freePort();
    const where = await haproxyDir();
    let config = await generate(`127.0.0.1:${port}`, where.socket, options);
    if (process.env.FLEET_HAPROXY_LOG) config = config.replace("local0 notice", "local0 info").replace("    option dontlognull", "    option httplog");
    const checked = await checkConfig(HAPROXY.path!, config);
    assert.ok(checked.ok, checked.output);
    const p = await startHaproxy(HAPROXY.path!, config, where, `http://127.0.0.1:${port}`);
    // Every server up (health checks passed) before a test relies on it.
    await eventually(async () => (await p.servers()).every((s) => s.status.startsWith("UP") || s.status === "no check"), 10_000, "every server UP");
    return p;
  }

  before(async () => {
    const t0 = performance.now();
    const models = { tiny: await tinyModel(), skip: await skipModel(), slow: await slowModel() };
    agentPorts = await Promise.all(CATALOGUES.map(() => freePort()));
    daemons = await Promise.all(
      CATALOGUES.map(async (names, i) => {
        const dir = join(dirs, `d${i + 1}`);
        await mkdir(dir, { recursive: true });
        // Hard links: the same bytes under each daemon's own name for them (the slow model is 200 MB).
        for (const name of names) await link(models[name], join(dir, `${name}.gguf`)).catch(() => copyFile(models[name], join(dir, `${name}.gguf`)));
        return spawnDaemon(["--models-dir", dir, "--agent-port", String(agentPorts[i]), "--parallel", "2", "--max-queue", "0", "--max-models", "2", "--ctx-size", "512", "--spare-engine", "false"]);
      }),
    );
    const t1 = performance.now();
    // Load every model once, so that what the tests time is requests, not loads. One load at a time per
    // daemon, so that two engine processes never start at once on this 2-core machine.
    await Promise.all(
      daemons.map(async (d, i) => {
        for (const name of CATALOGUES[i]) {
          const r = await d.post("/load_model", { name });
          assert.equal(r.status, 200, await r.text());
        }
      }),
    );
    const t2 = performance.now();
    proxy = await startProxy();
    base = proxy.url;
    if (process.env.FLEET_TIMES) {
      console.log(`daemons ${Math.round(t1 - t0)} ms, loads ${Math.round(t2 - t1)} ms, proxy ${Math.round(performance.now() - t2)} ms`);
      for (const d of daemons) console.log(d.stdout().split("\n").filter((l) => l.includes("/load_model")).map((l) => JSON.parse(l).ms).join(" "));
    }
  });

  after(async () => {
    await proxy?.stop().catch(() => {});
    killStartedHaproxies();
    killStartedDaemons();
    await rm(dirs, { recursive: true, force: true });
  });

  it("`kekahyde fleet-config` is one command that prints this config", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, "fleet-config", "--listen", "127.0.0.1:8080", ...daemons.flatMap((d) => ["--daemon", d.url]), ...agentPorts.flatMap((p) => ["--agent-port", String(p)])], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    assert.equal(code, 0, stderr);
    // The same config as the function writes, but for the comments and the admin socket asked for here.
    const strip = (config: string) => config.split("\n").filter((l) => !l.trim().startsWith("#") && !l.includes("stats socket")).join("\n");
    assert.equal(strip(stdout), strip(await generate("127.0.0.1:8080", "unused")));
    const checked = await checkConfig(HAPROXY.path!, stdout);
    assert.ok(checked.ok, checked.output);
  });

  it("sends a request for a model only to daemons that have it, on every route, with the model's exact text", async () => {
    for (const model of ["tiny", "skip", "slow"] as const) {
      const step = model === "skip" ? 2 : 1;
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const a = await complete(base, model, 5);
        assert.equal(a.status, 200, a.text);
        assert.equal(a.text, expectedContinuation("abc", 5, step), `${model} via ${a.daemon}`);
        assert.ok(HOLDERS[model].includes(a.daemon!), `${model} answered by ${a.daemon}, which does not have it`);
        seen.add(a.daemon!);
      }
      assert.deepEqual([...seen].sort(), HOLDERS[model], `${model}: the daemons that have it take turns`);
    }
    // OpenAI's and Ollama's routes, and Ollama's "name:latest".
    const openai = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "skip", prompt: "abc", max_tokens: 5, temperature: 0 }) });
    assert.equal(((await openai.json()) as { choices: Array<{ text: string }> }).choices[0].text, expectedContinuation("abc", 5, 2));
    assert.ok(HOLDERS.skip.includes(openai.headers.get("x-kekahyde-daemon")!));
    const chat = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 6, temperature: 0 }) });
    assert.equal(((await chat.json()) as { choices: Array<{ message: { content: string } }> }).choices[0].message.content, expectedChatReply(6));
    assert.ok(HOLDERS.tiny.includes(chat.headers.get("x-kekahyde-daemon")!));
    for (const name of ["skip:latest", "skip"]) {
      const ollama = await fetch(`${base}/api/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: name, prompt: "abc", raw: true, stream: false, options: { num_predict: 5, temperature: 0 } }) });
      assert.equal(((await ollama.json()) as { response: string }).response, expectedContinuation("abc", 5, 2));
      assert.ok(HOLDERS.skip.includes(ollama.headers.get("x-kekahyde-daemon")!));
    }
    // A body larger than HAProxy's buffer (64 KiB) is still routed by its "model", which JSON clients write first.
    const big = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "skip", messages: [{ role: "user", content: "abc ".repeat(40_000) }], max_tokens: 1 }) });
    assert.equal(big.headers.get("x-kekahyde-daemon"), "d1", await big.text());
    // No model: the default backend, any daemon.
    const tags = await fetch(`${base}/api/tags`);
    assert.equal(tags.status, 200);
    assert.ok(["d1", "d2", "d3"].includes(tags.headers.get("x-kekahyde-daemon")!));
  });

  it("serves the first requests for a model that is not loaded yet, with --max-queue 0 (they wait for the load they caused)", async () => {
    const d1 = byName("d1");
    assert.equal((await d1.post("/unload_model", { model: "skip" })).status, 200);
    const loaded = async () => ((await (await fetch(`${d1.url}/status`)).json()) as { models: Array<{ name: string }> }).models.map((m) => m.name);
    await eventually(async () => !(await loaded()).includes("skip"), 10_000, "skip unloaded on d1");
    // Two at once (--parallel 2): both wait for the load the first one causes, neither is refused.
    const generate = async () => {
      const r = await fetch(`${base}/api/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "skip", prompt: "abc", raw: true, stream: false, options: { num_predict: 4, temperature: 0 } }) });
      return { status: r.status, body: await r.text(), daemon: r.headers.get("x-kekahyde-daemon") };
    };
    const answers = await Promise.all([generate(), generate()]);
    for (const a of answers) {
      assert.equal(a.status, 200, a.body);
      assert.equal((JSON.parse(a.body) as { response: string }).response, expectedContinuation("abc", 4, 2));
      assert.equal(a.daemon, "d1");
    }
    assert.ok((await loaded()).includes("skip"), "loaded on first use");
  });

  it("spreads concurrent requests for a shared model over the daemons that have it", async () => {
    await settled("model_slow");
    const answers = await Promise.all(Array.from({ length: 4 }, () => complete(base, "slow", 24)));
    for (const a of answers) {
      assert.equal(a.status, 200, a.text);
      assert.equal(a.text, expectedContinuation("abc", 24));
    }
    const counts = { d2: answers.filter((a) => a.daemon === "d2").length, d3: answers.filter((a) => a.daemon === "d3").length };
    assert.deepEqual(counts, { d2: 2, d3: 2 }, "two slots each: two requests each");
  });

  /** HAProxy's servers of `backend`, their state and weight, for a failure's message. */
  const backendView = async (backend: string) =>
    (await proxy.servers())
      .filter((s) => s.backend === backend)
      .map((s) => `${s.server} ${s.status} w${s.weight}`)
      .join(", ");

  /** Waits until HAProxy's weights for `backend` say every daemon in it is idle (its agents have answered since the last test). */
  async function settled(backend: string, on: Haproxy = proxy): Promise<void> {
    await eventually(async () => (await on.servers()).filter((s) => s.backend === backend && !s.server.endsWith("_overflow")).every((s) => s.weight === 100), 5_000, `${backend}'s weights back to 100`);
  }

  /** Fills every slot of `d` with slow requests sent to it directly (HAProxy does not see them); returns how to end them. */
  async function fill(d: DaemonProcess): Promise<() => Promise<void>> {
    const stop = new AbortController();
    const pending = [0, 1].map(() => complete(d.url, "slow", 500, {}, stop.signal).catch(() => null));
    await eventually(async () => (await running(d)) === 2, 10_000, `${d.url} full`);
    return async () => {
      stop.abort();
      await Promise.all(pending);
      await eventually(async () => (await running(d)) === 0, 10_000, `${d.url} idle`);
    };
  }

  it("feeds HAProxy each daemon's load: a full daemon's weight drops, and the next requests go where slots are free", async () => {
    const d2 = byName("d2");
    const release = await fill(d2);
    try {
      const from = await logMark(d2);
      // Within an agent interval (half a second) HAProxy learns that d2 has no room (and that d3 has: the last test
      // may have left it looking full).
      const weights = async () => new Map((await proxy.servers()).filter((s) => s.backend === "model_slow").map((s) => [s.server, s.weight]));
      await eventually(async () => {
        const w = await weights();
        return w.get("d2") === 0 && w.get("d3")! > 0;
      }, 3_000, "d2's weight 0, d3's above");
      for (let i = 0; i < 4; i++) {
        // One at a time, d3 idle in between, so that d3 has a free slot whenever its agent is asked.
        await eventually(async () => (await running(byName("d3"))) === 0 && (await weights()).get("d3")! > 0, 5_000, "d3 idle");
        const a = await complete(base, "slow", 3);
        assert.equal(a.status, 200, a.text);
        assert.equal(a.daemon, "d3");
      }
      assert.equal(loggedRequests(d2, 503, from), 0, `HAProxy did not even try the full daemon: ${d2.stdout().slice(from)}\n${proxy.output().slice(-3000)}`);
      // Every daemon full: the overflow lines still take the request to a daemon, whose own 503 comes back.
      const release3 = await fill(byName("d3"));
      try {
        await eventually(async () => (await proxy.servers()).filter((s) => s.backend === "model_slow" && !s.server.endsWith("_overflow")).every((s) => s.weight === 0), 3_000, "both weights 0");
        const refused = await complete(base, "slow", 3);
        assert.equal(refused.status, 503);
        assert.equal((JSON.parse(refused.text) as { code: string }).code, "QUEUE_FULL");
      } finally {
        await release3();
      }
    } finally {
      await release();
    }
    await eventually(async () => (await proxy.servers()).find((s) => s.backend === "model_slow" && s.server === "d2")!.weight === 100, 3_000, "d2's weight back to 100");
  });

  it("retries a full daemon's 503 on another that has room, and answers 503 only when every daemon is full", async () => {
    // Without agents HAProxy cannot know d2 is full, so it tries it: the 503 is retried, never seen.
    const blind = await startProxy({ agents: false });
    const d2 = byName("d2");
    const d3 = byName("d3");
    const release = await fill(d2);
    try {
      const from = await logMark(d2);
      for (let i = 0; i < 6; i++) {
        const a = await complete(blind.url, "slow", 3);
        assert.equal(a.status, 200, a.text);
        assert.equal(a.daemon, "d3");
        assert.equal(a.text, "def");
      }
      assert.ok(loggedRequests(d2, 503, from) >= 1, "HAProxy tried the full daemon (and retried elsewhere)");
      const release3 = await fill(d3);
      try {
        const refused = await complete(blind.url, "slow", 3);
        assert.equal(refused.status, 503);
        assert.equal((JSON.parse(refused.text) as { code: string }).code, "QUEUE_FULL", "the daemon's own answer, with Retry-After");
      } finally {
        await release3();
      }
    } finally {
      await release();
      await blind.stop();
    }
  });

  it('stops a request through the proxy: POST /stop {"id"} reaches the daemon that runs it', async () => {
    const first = complete(base, "slow", 400, { "x-request-id": "fleet-stop-a" });
    const second = complete(base, "slow", 400, { "x-request-id": "fleet-stop-b" });
    await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 2, 10_000, "both running");
    const stop = (id: string) => fetch(`${base}/stop`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id }) }).then((r) => r.json());
    assert.deepEqual(await stop("fleet-stop-b"), { stopped: true, dropped: 0 });
    const b = await second;
    assert.equal(b.finish, "cancelled");
    assert.equal(b.id, "fleet-stop-b");
    assert.ok(b.text.length < 400 && expectedContinuation("abc", 400).startsWith(b.text));
    await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 1, 5_000, "only the other request running");
    assert.deepEqual(await stop("fleet-stop-a"), { stopped: true, dropped: 0 });
    assert.equal((await first).finish, "cancelled");
    assert.deepEqual(await stop("never-sent"), { stopped: false, dropped: 0 });

    // A client that sent no id gets HAProxy's, in X-Request-Id as soon as the stream starts, and stops with it.
    const streamed = await fetch(`${base}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "slow", prompt: "abc", raw: true, max_tokens: 400, temperature: 0, stream: true }) });
    const id = streamed.headers.get("x-request-id")!;
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.deepEqual(await stop(id), { stopped: true, dropped: 0 });
    const text = await streamed.text();
    assert.ok(text.length < 400 && expectedContinuation("abc", 400).startsWith(text));
  });

  it("stops a request on a daemon HAProxy holds down (draining, or thought dead): the stop still reaches it", async () => {
    // The last test's generations end just after their answers: counted only this one's below.
    await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 0, 5_000, "d2 and d3 idle");
    const pending = complete(base, "slow", 400, { "x-request-id": "fleet-stop-down" });
    await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 1, 10_000, "the request running");
    const on = (await running(byName("d2"))) === 1 ? "d2" : "d3";
    await proxy.command(`set server daemon_${on}/${on} health down`);
    try {
      await eventually(async () => (await proxy.servers()).find((s) => s.backend === `daemon_${on}` && s.server === on)!.status.startsWith("DOWN"), 3_000, `${on} DOWN`);
      const stop = await fetch(`${base}/stop`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: "fleet-stop-down" }) });
      assert.deepEqual(await stop.json(), { stopped: true, dropped: 0 });
      const a = await pending;
      assert.equal(a.finish, "cancelled");
      assert.equal(a.daemon, on);
    } finally {
      await proxy.command(`set server daemon_${on}/${on} health up`);
    }
    await eventually(async () => (await proxy.servers()).every((s) => s.status.startsWith("UP") || s.status === "no check"), 5_000, "every server UP again");
  });

  it("cancels the generation of a client that goes away, through the proxy as without it", async () => {
    for (const stream of [false, true]) {
      const gone = new AbortController();
      const pending = fetch(`${base}/run_prompt`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "slow", prompt: "abc", raw: true, max_tokens: 400, temperature: 0, stream }),
        signal: gone.signal,
      }).then((r) => r.text());
      await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 1, 10_000, "the request running");
      gone.abort();
      await assert.rejects(pending);
      await eventually(async () => (await running(byName("d2"))) + (await running(byName("d3"))) === 0, 5_000, `the ${stream ? "streamed" : "whole"} generation cancelled`);
    }
  });

  it("loses only a killed daemon's in-flight requests; the next ones succeed at once and it is out within seconds", async () => {
    const d3 = byName("d3");
    await settled("model_slow");
    const body = () => JSON.stringify({ model: "slow", prompt: "abc", raw: true, max_tokens: 60, temperature: 0, stream: true });
    const streams = await Promise.all([0, 1, 2, 3].map(() => fetch(`${base}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: body() })));
    const on = streams.map((s) => s.headers.get("x-kekahyde-daemon"));
    assert.deepEqual([...on].sort(), ["d2", "d2", "d3", "d3"], `statuses ${streams.map((s) => s.status).join(" ")}`);
    // The window between a daemon's death and its failed health checks, made certain: HAProxy's fleet_default
    // weighs d1 and d2 as their agents weigh full daemons and d3 as free, and the agents say nothing new
    // until the probes below are done.
    const fullWeight = /^ready up (\d+)%\n$/.exec(agentReply({ draining: false, slots: 2, freeSlots: 0, queued: 0, maxQueue: 0 }))![1];
    for (const [name, weight] of [["d1", fullWeight], ["d2", fullWeight], ["d3", "100"]]) {
      await proxy.command(`disable agent fleet_default/${name}`);
      await proxy.command(`set weight fleet_default/${name} ${weight}%`);
    }
    const exited = new Promise((resolve) => d3.child.once("exit", resolve));
    const killedAt = performance.now();
    d3.child.kill("SIGKILL");
    await exited;
    // Right after the death (d3 is still up for its health check, which needs two failures 250 ms apart):
    // requests any daemon can answer are answered by a live one, although HAProxy thought only d3 had room.
    try {
      for (let i = 0; i < 4; i++) {
        const r = await fetch(`${base}/status`);
        const text = await r.text();
        assert.equal(r.status, 200, `probe ${i + 1}, ${Math.round(performance.now() - killedAt)} ms after the kill: ${text}; fleet_default: ${await backendView("fleet_default")}`);
        assert.ok(["d1", "d2"].includes(r.headers.get("x-kekahyde-daemon")!), `probe ${i + 1} answered by ${r.headers.get("x-kekahyde-daemon")}`);
      }
    } finally {
      for (const name of ["d1", "d2", "d3"]) await proxy.command(`enable agent fleet_default/${name}`);
    }
    // HAProxy's view, watched from the kill on: every line of d3 DOWN (at the first refused connection, else within a few health checks).
    const down = eventually(async () => (await proxy.servers()).filter((s) => s.server.startsWith("d3") && s.status !== "no check").every((s) => s.status.startsWith("DOWN")) && performance.now(), 10_000, "d3 DOWN");
    const results = await Promise.all(streams.map((s) => s.text().then((t) => ({ ok: true, t }), () => ({ ok: false, t: "" }))));
    results.forEach((r, i) => {
      if (on[i] === "d2") assert.deepEqual(r, { ok: true, t: expectedContinuation("abc", 60) }, "d2's streams are whole");
      else assert.ok(!r.ok || r.t.length < 60, "d3's streams were cut");
    });
    // Requests sent right after the kill: every one answered (HAProxy retries the dead daemon's refusal).
    for (let i = 0; i < 8; i++) {
      const a = await complete(base, "slow", 3);
      if (a.status !== 200) assert.fail(`request ${i + 1} after the kill (${Math.round(performance.now() - killedAt)} ms): ${a.status} ${a.text.trim()}; model_slow: ${await backendView("model_slow")}`);
      assert.equal(a.daemon, "d2");
    }
    const downAfter = (await down) - killedAt;
    assert.ok(downAfter < 4_000, `d3 out after ${Math.round(downAfter)} ms`);
  });

  it("takes a new config without a dropped request: re-generate, reload", async () => {
    // d3 is gone: the new config has d1 and d2 only. A stream running through the old one ends whole.
    const stream = await fetch(`${base}/run_prompt`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tiny", prompt: "abc", raw: true, max_tokens: 200, temperature: 0, stream: true }) });
    const next = await generate(new URL(base).host, proxy.socket, { only: [byName("d1"), byName("d2")] });
    assert.doesNotMatch(next, /server d3/);
    await proxy.reload(next);
    assert.equal(await stream.text(), expectedContinuation("abc", 200));
    await eventually(async () => {
      const servers = await proxy.servers();
      return servers.length > 0 && !servers.some((s) => s.server === "d3") && servers.every((s) => s.status.startsWith("UP") || s.status === "no check");
    }, 10_000, "the new config's servers UP");
    for (let i = 0; i < 4; i++) {
      const a = await complete(base, "skip", 5);
      assert.equal(a.status, 200);
      assert.equal(a.text, expectedContinuation("abc", 5, 2));
      assert.equal(a.daemon, "d1");
    }
  });

  it("sends a draining daemon no new request: its agent says drain before it stops", async () => {
    const d1 = byName("d1");
    const from = await logMark(d1);
    d1.child.kill("SIGTERM");
    // It drains for 2 s (the default with --agent-port). Within an agent interval HAProxy holds d1 in DRAIN
    // (admin state bit 0x08: set by its agent).
    await eventually(async () => ((await proxy.adminStates()).get("model_tiny/d1") ?? 0) & 0x08, 2_500, "d1 drained by its agent");
    for (let i = 0; i < 6; i++) {
      const a = await complete(base, "tiny", 5);
      assert.equal(a.status, 200);
      assert.equal(a.daemon, "d2");
      assert.equal(a.text, "defgh");
    }
    assert.equal(loggedRequests(d1, 200, from), 0, "d1 was sent nothing after SIGTERM");
    assert.equal(await d1.exited, 0);
  });
});
