import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { FIXTURES } from "./fixtures.ts";

/** The real daemon (the TypeScript sources) in a process of its own, for tests that signal or kill it. */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Its functions are arrows, bound to nothing: tests take them out of the object. */
export interface DaemonProcess {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  stderr: () => string;
  post: (path: string, body?: unknown) => Promise<Response>;
  status: () => Promise<Record<string, any>>;
  /** Resolves with the exit code (or signal) once it has exited. */
  exited: Promise<number | NodeJS.Signals | null>;
}

const started: ChildProcess[] = [];

/**
 * Starts `kekahyde serve` with `args` on a free port and waits until it answers /health (readiness is polled
 * over HTTP). `readStdout: false` leaves its stdout a pipe nobody reads, once Node's own buffer is full: a
 * stalled log reader. `entry`: Node's arguments that start the daemon instead of the TypeScript sources
 * (a compiled build).
 */
export async function spawnDaemon(args: string[] = [], { readStdout = true, entry = ["--import", "tsx", CLI] }: { readStdout?: boolean; entry?: string[] } = {}): Promise<DaemonProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [...entry, "serve", "--port", String(port), "--threads", "1", "--log-format", "json", ...args], {
    cwd: ROOT,
    env: { ...process.env, KEKAHYDE_GPU: "off", XDG_DATA_HOME: join(FIXTURES, "data"), XDG_CACHE_HOME: join(FIXTURES, "cache") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let stdout = "";
  let stderr = "";
  if (readStdout) child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the daemon exited with ${child.exitCode}: ${stderr}`);
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`the daemon did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const post = (path: string, body?: unknown) =>
    fetch(url + path, { method: "POST", headers: body === undefined ? {} : { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const status = async () => (await fetch(url + "/status")).json() as Promise<Record<string, any>>;
  return { child, url, stdout: () => stdout, stderr: () => stderr, post, status, exited };
}

/** Kills every daemon a test started and did not end (a failed test must not leave processes behind). */
export function killStartedDaemons(): void {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** Process ids whose parent is `pid` (Linux: read from /proc). */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // It has just ended.
    }
  }
  return children;
}

/** The engine processes among `pid`'s children (their command line runs the engine host). */
export function engineProcessesOf(pid: number): number[] {
  return childrenOf(pid).filter((child) => {
    try {
      return /engine[/\\]process[/\\]host\.[jt]s/.test(readFileSync(`/proc/${child}/cmdline`, "utf8"));
    } catch {
      return false;
    }
  });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (ended, not yet reaped by its new parent) counts as gone.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
