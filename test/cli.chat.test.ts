import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFile, link, mkdir, mkdtemp, rm } from "node:fs/promises";
import { request as httpRequest, createServer as createHttpServer, type Server } from "node:http";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { FIXTURES, slowModel, tinyModel } from "../testing/fixtures.ts";

// `kekahyde list|ps|show|run NAME` against the real daemon, its models found by name in a --models-dir: one-shot
// and piped answers, and the terminal chat driven through a pseudo-terminal as a person would type.

const BIN = fileURLToPath(new URL("../bin/kekahyde.js", import.meta.url));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `kekahyde ARGS` (the daemon is in this process, so never synchronously); `input` is written to its stdin, which is then closed. */
function kekahyde(args: string[], env: Record<string, string>, input?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) child.stdin!.end(input);
  });
}

/**
 * A pseudo-terminal for the command, through Python's pty module: the command's stdin, stdout and stderr are
 * the terminal (so readline sees a TTY and Ctrl-C arrives as the byte "\x03"), relayed to and from our pipes.
 */
const PTY_RELAY = String.raw`
import os, pty, sys, select, struct, fcntl, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    os.execvp(sys.argv[1], sys.argv[1:])
stdin_open = True
while True:
    r, _, _ = select.select([fd] + ([0] if stdin_open else []), [], [])
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        os.write(1, data)
    if 0 in r:
        data = os.read(0, 65536)
        if data:
            os.write(fd, data)
        else:
            stdin_open = False
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
`;

/**
 * What the terminal shows: the bytes played on a line-at-a-time screen that knows what readline and the
 * spinner use: carriage return, cursor to column (ESC [ n G), erase to the end (ESC [ K, ESC [ 0 J).
 */
function screen(raw: string): string {
  const lines: string[] = [];
  let line: string[] = [];
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === "\x1b") {
      // eslint-disable-next-line no-control-regex -- an ANSI escape sequence starts with ESC
      const m = /^\x1b\[([0-9;?]*)([A-Za-z])/.exec(raw.slice(i, i + 16));
      if (!m) continue;
      i += m[0].length - 1;
      if (m[2] === "G") col = Math.max(0, Number(m[1] || 1) - 1);
      else if (m[2] === "K" || m[2] === "J") line = line.slice(0, col);
    } else if (c === "\r") col = 0;
    else if (c === "\n") {
      lines.push(line.join(""));
      line = [];
      col = 0;
    } else {
      while (line.length < col) line.push(" ");
      line[col++] = c;
    }
  }
  return [...lines, line.join("")].join("\n");
}

class Terminal {
  raw = "";
  readonly exit: Promise<number | null>;
  private readonly child;
  constructor(args: string[], env: Record<string, string>) {
    this.child = spawn("python3", ["-c", PTY_RELAY, process.execPath, BIN, ...args], { env: { ...process.env, TERM: "xterm", ...env }, stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout.on("data", (d) => (this.raw += d));
    this.child.stderr.on("data", (d) => (this.raw += d));
    this.exit = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }
  get text(): string {
    return screen(this.raw);
  }
  /** Types keys into the terminal ("\r" is Enter, "\x03" Ctrl-C, "\x04" Ctrl-D). */
  type(keys: string): void {
    this.child.stdin.write(keys);
  }
  /** Waits until the screen, from `from` on, matches; returns where the match ends. */
  async waitFor(pattern: RegExp | string, from = 0, timeoutMs = 15_000): Promise<number> {
    let end = -1;
    const found = () => {
      const rest = this.text.slice(from);
      const at = typeof pattern === "string" ? rest.indexOf(pattern) : rest.search(pattern);
      if (at >= 0) end = from + at + (typeof pattern === "string" ? pattern.length : rest.match(pattern)![0].length);
      return at >= 0;
    };
    await waitUntil(found, timeoutMs).catch(() => {
      throw new Error(`timed out waiting for ${String(pattern)} on the terminal; after ${from} it shows:\n${this.text.slice(from)}`);
    });
    return end;
  }
  /** The exit code, once the command has ended (within `timeoutMs`). */
  exited(timeoutMs = 10_000): Promise<number | null> {
    return Promise.race([this.exit, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still running; the terminal shows:\n${this.text}`)), timeoutMs).unref())]);
  }
  /** Waits for the next `>>> ` prompt after `from`. */
  prompt(from: number, timeoutMs?: number): Promise<number> {
    return this.waitFor(/(^|\n)>>> $/, from, timeoutMs);
  }
  kill(): void {
    this.child.kill("SIGKILL");
  }
}

/** `--verbose`'s prompt token count of each answer on the screen after `from`. */
const promptCounts = (text: string) => [...text.matchAll(/prompt eval count:\s+(\d+) token/g)].map((m) => Number(m[1]));

describe("kekahyde list, ps, show and run NAME", () => {
  let d: TestDaemon;
  let dir: string;
  let env: Record<string, string>;
  const terminals: Terminal[] = [];

  before(async () => {
    const [tiny, slow] = await Promise.all([tinyModel(), slowModel()]);
    // A models directory of our own, next to the fixtures (so that the files can be hard links).
    await mkdir(FIXTURES, { recursive: true });
    dir = await mkdtemp(join(FIXTURES, "models-dir-"));
    for (const [from, name] of [[tiny, "tiny.gguf"], [slow, "slow.gguf"]]) await link(from, join(dir, name)).catch(() => copyFile(from, join(dir, name)));
    // --parallel 2: another client's generation runs beside the chat's, and must outlive its Ctrl-C.
    d = await startTestDaemon({ modelsDirs: [dir], maxModels: 2, parallel: 2, apiKey: "k" });
    env = { KEKAHYDE_PORT: new URL(d.url).port, KEKAHYDE_API_KEY: "k" };
  });
  after(async () => {
    for (const t of terminals) t.kill();
    await d?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const terminal = (args: string[]) => {
    const t = new Terminal(args, env);
    terminals.push(t);
    return t;
  };
  const authorized = { authorization: "Bearer k" };
  const status = async () => (await (await fetch(`${d.url}/status`, { headers: authorized })).json()) as Record<string, any>;
  const modelState = async (name: string) => ((await status()).models as Array<{ name: string; state: string }>).find((m) => m.name === name)?.state;

  it("list the catalogue, show a model's facts, and say so for an unknown name", async () => {
    const [list, show, unknown] = await Promise.all([kekahyde(["list"], env), kekahyde(["show", "tiny"], env), kekahyde(["show", "nope"], env)]);
    assert.equal(list.code, 0, list.stderr);
    const lines = list.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^NAME\s+ID\s+SIZE\s+MODIFIED$/);
    const rows = Object.fromEntries(lines.slice(1).map((l) => [l.split(/\s+/)[0].replace(/:latest$/, ""), l]));
    assert.deepEqual(Object.keys(rows).sort(), ["slow", "tiny"]);
    // The ID once the daemon has the file's digest; MODIFIED is the file's (a hard link to the fixture).
    assert.match(rows.tiny, /^tiny(:latest)?\s+([0-9a-f]{12}\s+)?\d+(\.\d)? MB\s+([A-Z]|\d).* ago$/);

    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^ {2}Model\n {4}architecture\s+llama\n/);
    assert.match(show.stdout, /\n {4}context length\s+4096\n/);
    assert.match(show.stdout, /\n {4}embedding length\s+384\n/);
    assert.match(show.stdout, /\n {2}Capabilities\n {4}completion\n/);

    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^kekahyde show: 404: model "nope" not found/);
    assert.equal(unknown.stdout, "");
  });

  it("run NAME PROMPT answers once, the answer alone on stdout; piped stdin is the prompt; --raw completes; the model loads on first use", async () => {
    // Three at once: the first to reach the daemon loads the model, the others wait for it.
    const [words, quoted, piped, raw] = await Promise.all([
      kekahyde(["run", "tiny", "Explain", "recursion", "--max-tokens", "9"], env),
      kekahyde(["run", "tiny", "Explain recursion", "--max-tokens", "5"], env),
      kekahyde(["run", "tiny", "--max-tokens", "12"], env, "Explain\nrecursion\n"),
      kekahyde(["run", "tiny", "abc", "--raw", "--max-tokens", "4"], env),
    ]);
    assert.equal(words.code, 0, words.stderr);
    assert.equal(words.stdout, " abcdefgh\n");
    assert.equal(words.stderr, "");
    assert.deepEqual([quoted.code, quoted.stdout], [0, " abcd\n"]);
    assert.deepEqual([piped.code, piped.stdout, piped.stderr], [0, " abcdefghijk\n", ""]);
    // --raw with a model: the prompt continued as given (POST /api/generate), not answered as a chat.
    assert.deepEqual([raw.code, raw.stdout, raw.stderr], [0, "defg\n", ""]);
    assert.equal(await modelState("tiny"), "idle");
  });

  it("ps lists the loaded model, and run keeps its old form: one argument that names no model is a prompt for the default model", async () => {
    // Ollama's way to load a model: a chat without messages.
    assert.equal((await d.post("/api/chat", { model: "tiny", messages: [] }, authorized)).status, 200);
    const [ps, legacy, raw, word] = await Promise.all([
      kekahyde(["ps"], env),
      kekahyde(["run", "Explain recursion", "--max-tokens", "5"], env),
      kekahyde(["run", "abc", "--raw", "--max-tokens", "4"], env),
      kekahyde(["run", "hello", "--max-tokens", "3"], env),
    ]);
    assert.equal(ps.code, 0, ps.stderr);
    const [header, ...rows] = ps.stdout.trimEnd().split("\n");
    assert.match(header, /^NAME\s+ID\s+SIZE\s+PROCESSOR\s+CONTEXT\s+UNTIL$/);
    assert.ok(
      rows.some((r) => /^tiny(:latest)?\s+([0-9a-f]{12}\s+)?\d+(\.\d)? MB\s+100% CPU\s+\d+\s+(\d+ minutes|About a minute|\d+ seconds) from now$/.test(r)),
      ps.stdout,
    );
    assert.deepEqual([legacy.code, legacy.stdout], [0, " abcd\n"], legacy.stderr);
    assert.deepEqual([legacy.stderr, raw.code, raw.stdout, raw.stderr], ["", 0, "defg\n", ""]);
    // A lone word that names no model is a prompt too, and stderr says how it was taken.
    assert.deepEqual([word.code, word.stdout], [0, " ab\n"], word.stderr);
    assert.match(word.stderr, /no model is called "hello" \(kekahyde list\), so it is a prompt for the default model/);
  });

  it("run with an unknown model or no daemon exits 1 with the reason on stderr", async () => {
    const free = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const [unknown, piped, noDaemon] = await Promise.all([
      kekahyde(["run", "nope", "hi"], env),
      kekahyde(["run", "nope"], env, "hi"),
      kekahyde(["list"], { ...env, KEKAHYDE_PORT: String(free) }),
    ]);
    for (const r of [unknown, piped]) {
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^kekahyde run: 404: model "nope" not found/);
      assert.equal(r.stdout, "");
    }
    assert.equal(noDaemon.code, 1);
    assert.match(noDaemon.stderr, /kekahyde list: No Kekahyde daemon answers at http:\/\/127\.0\.0\.1:\d+\. Start one with `kekahyde serve`/);
  });

  /**
   * A pass-through proxy in front of the daemon that keeps every /api/chat body the CLI sends: what each turn
   * carried (the prompt cache makes the evaluated counts say too little about it).
   */
  async function recordingProxy(): Promise<{ port: number; chats: Array<{ messages: Array<{ role: string; content: string }> }>; server: Server }> {
    const chats: Array<{ messages: Array<{ role: string; content: string }> }> = [];
    const target = new URL(d.url);
    const server = createHttpServer((req, res) => {
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        const body = Buffer.concat(parts);
        if (req.url === "/api/chat") chats.push(JSON.parse(body.toString()));
        const upstream = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.host } }, (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        });
        upstream.on("error", () => res.destroy());
        upstream.end(body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { port: (server.address() as { port: number }).port, chats, server };
  }

  it("chats in a terminal: streamed answers, every turn sent again, \"\"\" multi-line messages, /bye", async () => {
    const proxy = await recordingProxy();
    after(() => proxy.server.close());
    const t = new Terminal(["run", "tiny", "--max-tokens", "7", "--verbose"], { ...env, KEKAHYDE_PORT: String(proxy.port) });
    terminals.push(t);
    let at = await t.prompt(0);
    t.type("hi\r");
    at = await t.waitFor("hi\n abcdef\n", at);
    at = await t.prompt(at);
    t.type("hi\r");
    at = await t.waitFor(" abcdef\n", at);
    at = await t.prompt(at);
    // The second request carried the first question and answer too.
    const turns = () => proxy.chats.filter((c) => c.messages.length > 0).map((c) => c.messages.map((m) => `${m.role}:${m.content}`));
    assert.deepEqual(turns().slice(0, 2), [["user:hi"], ["user:hi", "assistant: abcdef", "user:hi"]]);
    assert.equal(promptCounts(t.text).length, 2, "--verbose printed the counts of each answer");

    t.type("/clear\r");
    at = await t.waitFor("Cleared session context\n", at);
    at = await t.prompt(at);
    t.type('"""\r');
    at = await t.waitFor(/\n\.\.\. $/, at);
    t.type("ab\r");
    at = await t.waitFor(/ab\n\.\.\. $/, at);
    t.type('cd"""\r');
    at = await t.waitFor(" abcdef\n", at);
    await t.prompt(at);
    // One message, "ab", a newline, "cd", in a fresh conversation.
    assert.deepEqual(turns()[2], ["user:ab\ncd"]);
    assert.equal(t.text.match(/ abcdef\n/g)?.length, 3, "one answer to the multi-line message");

    t.type("/bye\r");
    assert.equal(await t.exited(), 0);
  });

  it("Ctrl-C stops the answer being written (POST /stop), and only it; the prompt comes back; at the prompt it only says how to leave; Ctrl-D leaves", async () => {
    const t = terminal(["run", "slow"]);
    // The first prompt comes once the slow model (200 MB) is loaded.
    let at = await t.prompt(0, 60_000);
    // Another client's answer on the same model, generating beside the chat's.
    const other = d.post("/api/chat", { model: "slow", messages: [{ role: "user", content: "hi" }], stream: false, options: { num_predict: 40 } }, authorized);
    t.type("hi\r");
    at = await t.waitFor(" abc", at, 30_000);
    assert.equal(await modelState("slow"), "generating");
    t.type("\x03");
    at = await t.prompt(at);
    const stops = () => d.logs.lines.filter((l) => l.event === "request" && l.path === "/stop");
    await waitUntil(() => stops().length > 0, 5_000, "POST /stop in the request log").catch(() => {});
    assert.equal(stops().length, 1, "one POST /stop");
    assert.equal(stops()[0].status, 200);
    const otherAnswer = (await (await other).json()) as { message: { content: string }; done_reason: string };
    assert.deepEqual([otherAnswer.done_reason, otherAnswer.message.content.length], ["length", 40], "the other client's answer ran to its end");
    await waitUntil(async () => (await modelState("slow")) === "idle", 5_000, "the slow model idle after Ctrl-C");
    const answer = t.text.slice(0, at).match(/hi\n( [a-z]*)\n/)![1];
    assert.ok(answer.length > 3 && answer.length < 200, answer);

    t.type("\x03");
    at = await t.waitFor("\nUse Ctrl-D or /bye to exit.\n", at);
    at = await t.prompt(at);
    t.type("some words\x03");
    at = await t.prompt(at);
    // With something typed, Ctrl-C clears it: no second hint, and the words are gone (the next line is a command of its own).
    assert.equal(t.text.match(/Use Ctrl-D or \/bye to exit\./g)?.length, 1);

    t.type("/set parameter num_predict 4\r");
    at = await t.prompt(await t.waitFor("Set parameter 'num_predict' to '4'", at));
    t.type("hi\r");
    at = await t.waitFor("hi\n abc\n", at);
    at = await t.prompt(at);
    t.type("\x04");
    assert.equal(await t.exited(), 0);
    assert.equal(await modelState("slow"), "idle");
  });
});
