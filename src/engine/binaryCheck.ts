// Preloaded into every engine process (`--import`, see process/engineProcess.ts) before node-llama-cpp loads.
//
// node-llama-cpp's getLlama tests a prebuilt binary before loading it, on Linux always: it forks a Node process
// (testBindingBinary.js) that loads the binary and initialises the backend, which costs most of a second on a
// small machine, on every start of every engine process. It has no option to skip it. This module remembers a
// passed test: it wraps child_process.fork, and when node-llama-cpp forks its test for a binary file that
// passed before (same path, size, mtime and inode, same extra backends folder, GPU choice, Node version,
// architecture and CPU model), it answers the test's messages itself ("loaded", "done", exit code 0) instead of
// starting the process. Any other binary is tested by the real process, whose pass is then remembered; a failed
// test is never remembered, so an incompatible binary is still caught before it is loaded. The record is
// $XDG_CACHE_HOME/kekahyde/binary-checks.json (~/.cache/... without it); KEKAHYDE_BINARY_CHECK=always turns
// remembering off (the test then runs on every start, as before).
//
// Not a module hook (module.register): a hook puts every later import of the process through the hooks thread,
// which cost more start-up time here than the test it saved.
import childProcess, { type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { cpus, homedir } from "node:os";
import { dirname, join } from "node:path";

const TEST_MODULE = /[\\/]node-llama-cpp[\\/]dist[\\/]bindings[\\/]utils[\\/]testBindingBinary\.js$/;
const KEEP = 20;

/** Where passed checks are remembered, or null when the test must run every time. */
export function binaryCheckFile(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.KEKAHYDE_BINARY_CHECK === "always") return null;
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "kekahyde", "binary-checks.json");
}

const stamp = (path: unknown) => {
  if (typeof path !== "string") return null;
  try {
    const s = statSync(path);
    return [path, s.size, s.mtimeMs, s.ino];
  } catch {
    return [path, null];
  }
};

/** What a passed test is remembered by: the files it tested and what they ran on. */
const keyOf = (start: { bindingBinaryPath?: unknown; extBackendsPath?: unknown; gpu?: unknown }) =>
  JSON.stringify([stamp(start.bindingBinaryPath), stamp(start.extBackendsPath), start.gpu ?? null, process.version, process.arch, cpus()[0]?.model ?? ""]);

function read(file: string): Record<string, string> {
  try {
    const all = JSON.parse(readFileSync(file, "utf8")) as unknown;
    return all && typeof all === "object" ? (all as Record<string, string>) : {};
  } catch {
    return {};
  }
}

function remember(file: string, key: string): void {
  try {
    const all = { ...read(file), [key]: new Date().toISOString() };
    const kept = Object.fromEntries(Object.entries(all).sort((a, b) => a[1].localeCompare(b[1])).slice(-KEEP));
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(kept, null, 1));
    renameSync(tmp, file);
  } catch {
    // Not remembered: the next start tests again.
  }
}

type Message = { type: string; bindingBinaryPath?: unknown; extBackendsPath?: unknown; gpu?: unknown };
type Fork = typeof childProcess.fork;

/**
 * Stands in for the test process until its "start" message says which binary is tested: a remembered one is
 * answered here; any other starts the real process, which gets the same messages and whose answers are passed on.
 */
function testProcess(realFork: Fork, args: Parameters<Fork>, file: string): ChildProcess {
  const proxy = new EventEmitter() as EventEmitter & { exitCode: number | null; killed: boolean; stdout: null; stderr: null; send(m: Message): boolean; kill(): boolean };
  let real: ChildProcess | null = null;
  let key: string | null = null;
  let passed = false;
  const exit = (code: number) => {
    if (proxy.exitCode !== null) return;
    proxy.exitCode = code;
    setImmediate(() => proxy.emit("exit", code, null));
  };
  Object.assign(proxy, { exitCode: null, killed: false, stdout: null, stderr: null });
  proxy.send = (m: Message) => {
    if (real) return real.send(m);
    if (m.type === "start") {
      key = keyOf(m);
      if (read(file)[key]) {
        setImmediate(() => proxy.emit("message", { type: "loaded" }));
        return true;
      }
      real = realFork(...args);
      // Its own "ready" is answered with the start message this stand-in has already had.
      real.on("message", (r: Message) => {
        if (r.type === "ready") return void real!.send(m);
        if (r.type === "done") passed = true;
        proxy.emit("message", r);
      });
      real.on("exit", (code) => {
        if (code === 0 && passed && key) remember(file, key);
        exit(code ?? -1);
      });
      real.on("error", () => exit(-1));
      return true;
    }
    if (m.type === "test") setImmediate(() => proxy.emit("message", { type: "done" }));
    else if (m.type === "exit") exit(0);
    return true;
  };
  proxy.kill = () => {
    if (real) return real.kill("SIGKILL");
    exit(0);
    return true;
  };
  setImmediate(() => proxy.emit("message", { type: "ready" }));
  return proxy as unknown as ChildProcess;
}

/** Wraps child_process.fork (node-llama-cpp imports it by name: the ES module's binding is updated too). */
export function rememberBinaryChecks(file = binaryCheckFile()): void {
  if (file === null) return;
  const realFork = childProcess.fork;
  const wrapped = ((...args: Parameters<Fork>) => {
    const [modulePath, , options] = args as [unknown, unknown, { env?: NodeJS.ProcessEnv } | undefined];
    const path = modulePath instanceof URL ? modulePath.pathname : String(modulePath);
    if (TEST_MODULE.test(path) && options?.env?.TEST_BINDING_CP === "true") return testProcess(realFork, args, file);
    return realFork(...args);
  }) as Fork;
  childProcess.fork = wrapped;
  syncBuiltinESMExports();
}

rememberBinaryChecks();
