import type { Stats } from "node:fs";
import { lstat } from "node:fs/promises";
import { Worker } from "node:worker_threads";
import type { GenerationProgress } from "../../domain/generation.ts";
import type { ModelPlan } from "../../domain/models.ts";
import { KekahydeError, toKekahydeError } from "../../errors.ts";
import { createLlamaEngine } from "../llamaEngine.ts";
import type { LoadedModel } from "../types.ts";
import type { EngineProcessOptions, FromEngine, SerializedError, ToEngine } from "./protocol.ts";

/**
 * An engine process: runs node-llama-cpp for one model on behalf of the daemon, which started it with an IPC
 * channel (processEngine.ts). Whatever llama.cpp does here (a native crash, an abort, a chat template that
 * loops) ends this process at worst, never the daemon.
 */

const options = JSON.parse(process.argv[2] ?? "{}") as EngineProcessOptions;

function send(message: FromEngine, done?: () => void): void {
  if (!process.connected) return;
  try {
    process.send!(message, undefined, {}, () => done?.());
  } catch {
    // The daemon has gone: the disconnect handler ends this process.
  }
}

const serialize = (e: unknown, code: SerializedError["code"]): SerializedError => {
  const k = toKekahydeError(e, code);
  return { code: k.code, message: k.message, details: k.details };
};

// No orphans: when the daemon goes away (even by SIGKILL) the IPC channel closes. A thread of its own also
// checks that the daemon is still the parent, because this thread may be stuck in a long render or decode.
process.on("disconnect", () => process.exit(0));
const watchdog = new Worker(
  `const { workerData } = require("node:worker_threads");
   setInterval(() => { if (process.ppid !== workerData.parent) process.kill(process.pid, "SIGKILL"); }, 500);`,
  { eval: true, workerData: { parent: process.ppid } },
);
watchdog.unref();

const engine = createLlamaEngine({
  gpu: options.gpu,
  threads: options.threads,
  contextSize: options.contextSize,
  flashAttention: options.flashAttention,
  parallel: options.parallel,
  onNativeLog: (level, message) => send({ type: "log", level, message }),
});

let model: LoadedModel | null = null;
const generations = new Map<number, AbortController>();

/**
 * The loader's warm-up (engine/loaderWarmUp.ts), while this process waits for its model: begun only once it
 * has been ready and idle for a moment, so that a load asked for at once (a daemon's first) never waits for
 * it; a load that comes meanwhile stops it and waits until it has let go.
 */
const WARM_UP_AFTER_IDLE_MS = 250;
let warmUp: { timer: NodeJS.Timeout; abort: AbortController; running: Promise<void> | null } | null = null;

function scheduleWarmUp(): void {
  if (warmUp) return;
  const state = {
    abort: new AbortController(),
    running: null as Promise<void> | null,
    timer: setTimeout(() => {
      state.running = engine.warmUpLoader(state.abort.signal);
    }, WARM_UP_AFTER_IDLE_MS),
  };
  warmUp = state;
}

async function stopWarmUp(): Promise<void> {
  const state = warmUp;
  warmUp = null;
  if (!state) return;
  clearTimeout(state.timer);
  state.abort.abort();
  await state.running;
}

/** The file a plan was made from, as the daemon checked it. */
type PlannedFile = Pick<ModelPlan, "path" | "fileSize" | "mtimeMs">;

/** What a path is now, in words, when it is not a regular file. */
function kindOf(st: Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isDirectory()) return "a directory";
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  return "not a regular file";
}

/** How the file at a planned path differs from the one the daemon checked; null when it is the same. */
async function changeOf(file: PlannedFile): Promise<string | null> {
  let st: Stats;
  try {
    // lstat: never opens the file (a FIFO's open would block) and never follows a link (the plan's path is
    // already the real one, so a link there now is itself a change).
    st = await lstat(file.path);
  } catch (e) {
    return `it cannot be found now (${(e as NodeJS.ErrnoException).code ?? "unknown error"})`;
  }
  if (!st.isFile()) return `it is now ${kindOf(st)}`;
  if (st.size !== file.fileSize || st.mtimeMs !== file.mtimeMs) {
    return `it is now a different file: ${st.size} bytes modified ${new Date(st.mtimeMs).toISOString()}, not ${file.fileSize} bytes modified ${new Date(file.mtimeMs).toISOString()}`;
  }
  return null;
}

/**
 * Checks that the files a plan names are still the ones the daemon checked, before llama.cpp opens them by
 * path: the daemon reads and checks a file (bounded), and this process opens it later, so a file replaced
 * in between (a FIFO renamed over it blocks llama.cpp's open until the load limit; a crafted file crashes
 * it) must be refused here, at once, with the reason.
 */
async function checkPlannedFiles(plan: ModelPlan): Promise<void> {
  for (const file of [plan, ...(plan.draft ? [plan.draft] : [])]) {
    const change = await changeOf(file);
    if (change) {
      throw new KekahydeError("MODEL_INVALID", `${file.path} changed since it was checked (${change}); load it again.`, { path: file.path });
    }
  }
}

/**
 * A generation's text and counts, sent at most once per token: what arrives while the channel is still busy
 * with the previous message is coalesced into the next one.
 */
class Stream {
  private text = "";
  private progress: GenerationProgress | null = null;
  private scheduled = false;
  private sending = false;
  constructor(private readonly id: number) {}
  push(text: string, progress: GenerationProgress | null): void {
    this.text += text;
    if (progress) this.progress = progress;
    if (!this.scheduled && !this.sending) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }
  flush(): void {
    this.scheduled = false;
    if (this.text === "" && this.progress === null) return;
    const message: FromEngine = { type: "stream", id: this.id, text: this.text, progress: this.progress };
    this.text = "";
    this.progress = null;
    this.sending = true;
    send(message, () => {
      this.sending = false;
      if (this.text !== "" || this.progress !== null) this.flush();
    });
  }
}

async function handle(message: ToEngine): Promise<void> {
  switch (message.type) {
    case "probe": {
      try {
        send({ type: "ready", ...(await engine.probe()) });
        scheduleWarmUp();
      } catch (e) {
        send({ type: "probeFailed", error: serialize(e, "ENGINE_FAILURE") });
      }
      return;
    }
    case "load": {
      await stopWarmUp();
      try {
        await checkPlannedFiles(message.plan);
        model = await engine.load(message.plan, { signal: new AbortController().signal, onProgress: (progress) => send({ type: "loadProgress", progress }) });
        send({ type: "loaded", info: model.info });
      } catch (e) {
        send({ type: "loadFailed", error: serialize(e, "MODEL_INVALID") });
      }
      return;
    }
    case "generate": {
      const abort = new AbortController();
      generations.set(message.id, abort);
      const stream = new Stream(message.id);
      try {
        if (!model) throw toKekahydeError(new Error("no model is loaded in this engine process"), "NO_MODEL");
        const result = await model.generate({
          ...message.request,
          signal: abort.signal,
          onText: (text) => stream.push(text, null),
          onProgress: (progress) => stream.push("", progress),
        });
        stream.flush();
        send({ type: "done", id: message.id, result });
      } catch (e) {
        stream.flush();
        send({ type: "failed", id: message.id, error: serialize(e, "ENGINE_FAILURE") });
      } finally {
        generations.delete(message.id);
      }
      return;
    }
    case "work": {
      const abort = new AbortController();
      generations.set(message.id, abort);
      try {
        if (!model) throw toKekahydeError(new Error("no model is loaded in this engine process"), "NO_MODEL");
        const { work } = message;
        const options = { signal: abort.signal };
        const result =
          work.kind === "embed"
            ? await model.embed(work.request, options)
            : work.kind === "rank"
              ? await model.rank(work.request, options)
              : work.kind === "tokenize"
                ? await model.tokenize(work.request, options)
                : await model.detokenize(work.request, options);
        send({ type: "done", id: message.id, result });
      } catch (e) {
        send({ type: "failed", id: message.id, error: serialize(e, "ENGINE_FAILURE") });
      } finally {
        generations.delete(message.id);
      }
      return;
    }
    case "abort":
      generations.get(message.id)?.abort();
      return;
    case "dispose":
      await stopWarmUp();
      for (const abort of generations.values()) abort.abort();
      await model?.dispose().catch(() => {});
      await engine.dispose().catch(() => {});
      process.exit(0);
  }
}

process.on("message", (message: ToEngine) => void handle(message));
