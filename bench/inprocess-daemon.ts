// The daemon with its engine in-process, for the bench only: the same `startDaemon` as `kekahyde serve`, the
// same options, but with `createLlamaEngine` injected, so node-llama-cpp runs inside the daemon as it did
// before issue 13 (no engine processes, no IPC). `bench/run.ts` runs it beside the real daemon, taking turns,
// to measure what the process boundary costs. Usage: node --import tsx bench/inprocess-daemon.ts [serve options]
import { parseServeArgs } from "../src/config.ts";
import { startDaemon } from "../src/daemon.ts";
import { createLlamaEngine } from "../src/engine/llamaEngine.ts";
import { detectDefaultThreads } from "../src/engine/threads.ts";
import { createLogger } from "../src/log.ts";

const argv = process.argv.slice(2);
const { config } = parseServeArgs(argv[0] === "serve" ? argv.slice(1) : argv);
const log = createLogger(config.logLevel, undefined, config.logFormat);
const threads = config.threads ?? (await detectDefaultThreads());
const engine = createLlamaEngine({
  gpu: config.gpu,
  threads,
  contextSize: config.contextSize,
  parallel: config.parallel,
  modelsDirs: config.modelsDirs,
  onNativeLog: (level, message) => log.warn({ event: "llama_log", level }, message),
});
const daemon = await startDaemon({ ...config, threads }, { log, engine });
const stop = () =>
  void daemon.close().then(
    () => log.flush(() => process.exit(0)),
    () => process.exit(1),
  );
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
