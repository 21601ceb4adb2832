import { execFile, spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/**
 * The real HAProxy (Debian's `haproxy` package, 2.6), for the fleet tests and the fleet benchmark: found on
 * PATH or in /usr/sbin, started in master-worker mode (so a reload is a real hitless reload), asked through
 * its admin socket. `.ci/run` installs it; without it the tests that need it skip and say why.
 */

/** The haproxy binary, or null with why it is missing. */
export function findHaproxy(): { path: string } | { path: null; why: string } {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const path = join(dir, "haproxy");
    try {
      accessSync(path, constants.X_OK);
      return { path };
    } catch {
      // not here
    }
  }
  return { path: null, why: "haproxy is not installed (apt-get install haproxy; .ci/run installs it)" };
}

const run = (file: string, args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === "number" ? ((error as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });

/** `haproxy -c -f FILE`: whether HAProxy accepts a config, and what it said. */
export async function checkConfig(binary: string, config: string): Promise<{ ok: boolean; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), "kekahyde-haproxy-check-"));
  try {
    const file = join(dir, "haproxy.cfg");
    await writeFile(file, config);
    const { code, stdout, stderr } = await run(binary, ["-c", "-f", file]);
    return { ok: code === 0, output: stdout + stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One server line of `show stat`. */
interface ServerStat {
  backend: string;
  server: string;
  status: string;
  weight: number;
}

export interface Haproxy {
  child: ChildProcess;
  url: string;
  configFile: string;
  socket: string;
  output(): string;
  /** Sends one admin command and returns the answer. */
  command(line: string): Promise<string>;
  servers(): Promise<ServerStat[]>;
  /** `show servers state`: admin state bits per backend/server (0x08: drained by its agent). */
  adminStates(): Promise<Map<string, number>>;
  /** Writes a new config and reloads (SIGUSR2 to the master): hitless, in-flight requests finish. */
  reload(config: string): Promise<void>;
  stop(): Promise<void>;
}

const started = new Set<ChildProcess>();

/** The admin socket's path in a fresh folder; pass it to fleetConfig's `statsSocket`. */
export async function haproxyDir(): Promise<{ dir: string; socket: string }> {
  const dir = await mkdtemp(join(tmpdir(), "kekahyde-haproxy-"));
  return { dir, socket: join(dir, "admin.sock") };
}

function adminCommand(socket: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(socket);
    let out = "";
    c.setTimeout(5_000, () => c.destroy(new Error(`haproxy admin socket: no answer to ${line}`)));
    c.on("data", (d) => (out += String(d)));
    c.on("end", () => resolve(out));
    c.on("error", reject);
    c.write(`${line}\n`);
  });
}

/** Starts HAProxy with `config` (which must hold `stats socket <socket>`), listening at `url`; waits until it answers. */
export async function startHaproxy(binary: string, config: string, where: { dir: string; socket: string }, url: string): Promise<Haproxy> {
  const configFile = join(where.dir, "haproxy.cfg");
  await writeFile(configFile, config);
  const child = spawn(binary, ["-W", "-db", "-f", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  started.add(child);
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", () => started.delete(child));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`haproxy exited with ${child.exitCode}: ${output}`);
    const up = await adminCommand(where.socket, "show info").then(
      () => true,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) throw new Error(`haproxy did not start: ${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const command = (line: string) => adminCommand(where.socket, line);
  const servers = async (): Promise<ServerStat[]> => {
    const [head, ...rows] = (await command("show stat")).trim().split("\n");
    const cols = head.replace(/^# /, "").split(",");
    const at = (name: string) => cols.indexOf(name);
    return rows
      .map((r) => r.split(","))
      .filter((v) => v[at("svname")] !== "FRONTEND" && v[at("svname")] !== "BACKEND")
      .map((v) => ({ backend: v[at("pxname")], server: v[at("svname")], status: v[at("status")], weight: Number(v[at("weight")]) }));
  };
  const adminStates = async () => {
    const states = new Map<string, number>();
    for (const row of (await command("show servers state")).split("\n")) {
      const f = row.trim().split(/\s+/);
      // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
      if (f.length > 7 && /^\d+$/.test(f[0])) states.set(`${f[1]}/${f[3]}`, Number(f[6]));
    }
    return states;
  };
  return {
    child,
    url,
    configFile,
    socket: where.socket,
    output: () => output,
    command,
    servers,
    adminStates,
    async reload(next: string) {
      await writeFile(configFile, next);
      const before = output.length;
      child.kill("SIGUSR2");
      // The master logs the new worker's start; then the old one finishes its requests and leaves.
      const until = Date.now() + 10_000;
      while (!/Loading success|reexec/i.test(output.slice(before)) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 200));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(where.dir, { recursive: true, force: true });
    },
  };
}

/** Kills every HAProxy a test started and did not stop. */
export function killStartedHaproxies(): void {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** Waits until `check` holds, polling every 50 ms, at most `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | null | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
