// Preloaded into every engine process (`--import`, see process/engineProcess.ts) before node-llama-cpp loads.
//
// node-llama-cpp's getLlama tests a prebuilt binary before loading it, on Linux always: it forks a Node process
// that loads the binary and initialises the backend (testBindingBinary.js), which costs a second or more on a
// small machine, on every start of every engine process. It has no option to skip it. This module remembers a
// passed test: a module hook stands in for testBindingBinary.js where getLlama.js imports it, and answers
// "compatible" at once when the same binary file (path, size, mtime, inode), the same extra backends folder, the
// same GPU choice, Node version, architecture and CPU model passed before; otherwise it runs node-llama-cpp's
// own test and remembers a pass. A failed test is never remembered, so an incompatible binary is still caught
// before it is loaded. The record is $XDG_CACHE_HOME/kekahyde/binary-checks.json (~/.cache/... without it);
// KEKAHYDE_BINARY_CHECK=always turns remembering off (the test then runs on every start, as before).
import { register } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";

/** Where passed checks are remembered, or null when the test must run every time. */
export function binaryCheckFile(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.KEKAHYDE_BINARY_CHECK === "always") return null;
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "kekahyde", "binary-checks.json");
}

/**
 * The stand-in for testBindingBinary.js (plain JavaScript, served as a data: URL by the hook below); __REAL__ is
 * the real module's URL and __FILE__ the record, both as JSON strings.
 */
const SHIM = `
import { testBindingBinary as tested } from __REAL__;
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname } from "node:path";
const file = __FILE__;
const KEEP = 20;
const stamp = (p) => {
  if (p == null) return null;
  try { const s = statSync(p); return [p, s.size, s.mtimeMs, s.ino]; } catch { return [p, null]; }
};
const read = () => { try { const all = JSON.parse(readFileSync(file, "utf8")); return all && typeof all === "object" ? all : {}; } catch { return {}; } };
export async function testBindingBinary(binary, extBackends, gpu, ...rest) {
  const key = JSON.stringify([stamp(binary), stamp(extBackends), gpu ?? null, process.version, process.arch, cpus()[0]?.model ?? ""]);
  if (read()[key]) return true;
  const ok = await tested(binary, extBackends, gpu, ...rest);
  if (ok) {
    try {
      const all = read();
      all[key] = new Date().toISOString();
      const kept = Object.fromEntries(Object.entries(all).sort((a, b) => String(a[1]).localeCompare(String(b[1]))).slice(-KEEP));
      mkdirSync(dirname(file), { recursive: true });
      const tmp = file + "." + process.pid;
      writeFileSync(tmp, JSON.stringify(kept, null, 1));
      renameSync(tmp, file);
    } catch {
      // Not remembered: the next start tests again.
    }
  }
  return ok;
}
`;

const HOOKS = `
const TARGET = "/node-llama-cpp/dist/bindings/utils/testBindingBinary.js";
const CALLER = "/node-llama-cpp/dist/bindings/getLlama.js";
let file = null;
const SHIM = ${JSON.stringify(SHIM)};
const shim = (url, file) => SHIM.replace("__REAL__", () => JSON.stringify(url)).replace("__FILE__", () => JSON.stringify(file));
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (file && resolved.url.endsWith(TARGET) && context.parentURL && context.parentURL.endsWith(CALLER))
    return { url: "data:text/javascript," + encodeURIComponent(shim(resolved.url, file)), format: "module", shortCircuit: true };
  return resolved;
}
`;

/** Installs the hook; a no-op when remembering is off. */
export function rememberBinaryChecks(file = binaryCheckFile()): void {
  if (file === null) return;
  register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, { data: { file } });
}

rememberBinaryChecks();
