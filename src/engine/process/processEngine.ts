import { basename } from "node:path";
import si from "systeminformation";
import type { GenerateResult } from "../../domain/generation.ts";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, JobResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../../domain/jobs.ts";
import type { ModelInfo, ModelPlan } from "../../domain/models.ts";
import { DEFAULT_MAX_LOAD_SECONDS, DEFAULT_MAX_STALL_SECONDS } from "../../domain/defaults.ts";
import { KekahydeError } from "../../errors.ts";
import { planModel } from "../planning.ts";
import type { Engine, EngineSettings, GenerateOptions, JobOptions, LoadedModel, LoadOptions } from "../types.ts";
import { EngineProcess, errorFrom, nativeMessage, type EngineExit } from "./engineProcess.ts";
import type { FromEngine, ToEngine } from "./protocol.ts";

/** Why an engine process ended, as /metrics counts it. */
export type EngineExitReason = "crash" | "load_timeout" | "first_token_timeout" | "stall" | "stuck" | "cancelled";

export interface ProcessEngineOptions extends EngineSettings {
  /**
   * Longest a load may take before its engine process is killed, waiting for a ready engine process
   * included; null: no limit.
   */
  maxLoadMs?: number | null;
  /**
   * Longest an engine process may take to start (Node, node-llama-cpp, its GPU probe) before it is killed
   * and, when a load or planning waits for it, another started; default: maxLoadMs, else the default load limit.
   */
  maxStartMs?: number;
  /** Longest a generation may wait for its first token (prompt, template) before the process is killed. */
  maxFirstTokenMs?: number | null;
  /**
   * Longest a generation may go without a token once it has had its first before the process is killed;
   * null: no limit; default: DEFAULT_MAX_STALL_SECONDS.
   */
  maxStallMs?: number | null;
  /** How long a stopped generation may take to end before its engine is considered stuck and killed. */
  abortGraceMs?: number;
  /** How long an engine process may take to free its model and exit when asked. */
  stopGraceMs?: number;
  /** Keep one engine process started ahead, so that a load does not wait for one to start. */
  spare?: boolean;
  /** Every engine process that ends without being asked, and why. */
  onEngineExit?: (reason: EngineExitReason, exit: EngineExit) => void;
}

export interface ProcessEngine extends Engine {
  /** Process ids of every engine process alive now (the spare included). */
  pids(): number[];
}

const DEFAULT_ABORT_GRACE_MS = 5_000;
const DEFAULT_STOP_GRACE_MS = 3_000;

/** A ready engine process: started, its library loaded, what it runs on known. */
interface Started {
  process: EngineProcess;
  gpu: string | false;
  vramFree: number | null;
}

/** An engine process on its way to ready: its handle at once (so that a limit can kill it), the rest once it says. */
interface Starting {
  process: EngineProcess;
  ready: Promise<Started>;
}

/** A load's time limit, counted from the load's start: waiting for an engine process to start counts too. */
interface LoadDeadline {
  /** Milliseconds left; null: no limit. */
  left(): number | null;
  /** The error of a load out of time; `starting`: its engine process had not even said it was ready. */
  error(starting: boolean): KekahydeError;
}

function reasonOf(exit: EngineExit): EngineExitReason {
  return (exit.reason?.details.reason as EngineExitReason | undefined) ?? "crash";
}

/** The error a model's requests and its runtime get when its engine process ends unasked. */
function lossError(path: string, exit: EngineExit): KekahydeError {
  if (exit.reason) return exit.reason;
  const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
  const native = nativeMessage(exit);
  return new KekahydeError(
    "ENGINE_CRASHED",
    `The engine process for ${basename(path)} ${how}${native ? `; llama.cpp said: ${native}` : ""}. Its requests were ended and the model was unloaded; the daemon goes on. The file is probably damaged or crafted: re-download or re-convert it.`,
    { path, signal: exit.signal, exit_code: exit.code, native_message: native, reason: "crash" },
  );
}

function loadDeadline(path: string, maxLoadMs: number | null): LoadDeadline {
  const since = performance.now();
  return {
    left: () => (maxLoadMs === null ? null : Math.max(0, maxLoadMs - (performance.now() - since))),
    error: (starting) =>
      new KekahydeError(
        "ENGINE_TIMEOUT",
        `Loading ${basename(path)} took longer than ${maxLoadMs! / 1000} s (--max-load-time); its engine process was stopped. ` +
          (starting
            ? "The engine process had not started in time (it never said it was ready: frozen, or the machine is overloaded); load it again."
            : "Raise --max-load-time for a large model on slow storage."),
        { path, reason: "load_timeout" },
      ),
  };
}

const loadCancelled = (path: string) => new KekahydeError("MODEL_INVALID", `loading ${path} was cancelled`, { path, reason: "cancelled" });

/** Why a starting engine process was killed by its start limit (it is then replaced; no request sees this). */
const startTimeout = (ms: number) =>
  new KekahydeError("ENGINE_TIMEOUT", `An engine process did not start within ${ms / 1000} s (it never said it was ready: frozen, or the machine is overloaded); it was stopped.`);

/**
 * The engine as the daemon uses it: each loaded model runs in an engine process of its own (host.ts), so a
 * model file that crashes llama.cpp, or a chat template that never ends, takes down that process only. The
 * daemon plans loads itself (pure JavaScript over the bounded GGUF reader) and never loads the native
 * library. Requests, tokens, progress and cancellation travel over IPC.
 */
export function createProcessEngine(options: ProcessEngineOptions): ProcessEngine {
  const live = new Set<EngineProcess>();
  const abortGraceMs = options.abortGraceMs ?? DEFAULT_ABORT_GRACE_MS;
  const stopGraceMs = options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  const startLimitMs = options.maxStartMs ?? options.maxLoadMs ?? DEFAULT_MAX_LOAD_SECONDS * 1000;
  const maxStallMs = options.maxStallMs === undefined ? DEFAULT_MAX_STALL_SECONDS * 1000 : options.maxStallMs;
  const availableMemory = options.availableMemory ?? (async () => (await si.mem()).available);
  const processOptions = { gpu: options.gpu, threads: options.threads, contextSize: options.contextSize, flashAttention: options.flashAttention ?? "auto", parallel: options.parallel ?? 1 };
  let spare: Starting | null = null;
  let disposed = false;

  /**
   * Starts an engine process and its library; `ready` refuses with the reason when the library cannot start,
   * or when the process has not said it is ready within the start limit (it is then killed): a frozen
   * process must not hold up planning and loads forever.
   */
  function start(): Starting {
    // A load or plan still waiting when the engine is disposed must not leave a new process behind.
    if (disposed) throw new KekahydeError("SHUTTING_DOWN", "The engine is shutting down: no engine process starts now.");
    const process = new EngineProcess(processOptions, options.onNativeLog);
    live.add(process);
    void process.exited.then(() => live.delete(process));
    const limit = setTimeout(() => process.kill(startTimeout(startLimitMs)), startLimitMs);
    const ready = new Promise<Started>((resolve, reject) => {
      const off = process.onMessage((m) => {
        if (m.type !== "ready" && m.type !== "probeFailed") return;
        off();
        clearTimeout(limit);
        if (m.type === "ready") resolve({ process, gpu: m.gpu, vramFree: m.vramFree });
        else {
          void process.terminate(stopGraceMs);
          reject(errorFrom(m.error));
        }
      });
      void process.exited.then((exit) => {
        off();
        clearTimeout(limit);
        reject(exit.reason ?? new KekahydeError("ENGINE_FAILURE", `An engine process could not start (${exit.signal ?? `exit code ${exit.code}`}): ${nativeMessage(exit) ?? "no message"}.`));
      });
      process.send({ type: "probe" });
    });
    return { process, ready };
  }

  /** The spare process, started now if there is none (or it has ended). */
  function spareProcess(): Starting {
    if (!spare?.process.alive) {
      const starting = start();
      spare = starting;
      starting.ready.catch(() => {
        if (spare === starting) spare = null;
      });
    }
    return spare;
  }

  /** What the spare runs on, for planning; a spare that ended (or was stopped for not starting in time) is replaced once. */
  async function spareReady(): Promise<Started> {
    const started = await spareProcess().ready.catch(() => null);
    if (started?.process.alive) return started;
    return spareProcess().ready;
  }

  /** Stops the spare process, if there is one: a fresh one replaces it. */
  function retireSpare(): void {
    const old = spare;
    spare = null;
    if (old) void old.process.terminate(stopGraceMs);
  }

  /**
   * Kills a load's engine process when the load runs out of time or is cancelled; returns what stops
   * watching, and says which error it killed the process with, if it did.
   */
  function guard(process: EngineProcess, path: string, signal: AbortSignal, deadline: LoadDeadline, starting: boolean): { stop(): void; killedWith(): KekahydeError | null } {
    let killedWith: KekahydeError | null = null;
    const kill = (error: KekahydeError) => {
      killedWith ??= error;
      process.kill(error);
    };
    const left = deadline.left();
    const timer = left !== null ? setTimeout(() => kill(deadline.error(starting)), left) : undefined;
    const cancel = () => kill(loadCancelled(path));
    if (signal.aborted) cancel();
    else signal.addEventListener("abort", cancel, { once: true });
    return {
      stop: () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", cancel);
      },
      killedWith: () => killedWith,
    };
  }

  /**
   * Waits, within the load's time, for an engine process to be ready for it. A process killed for the
   * load's own time limit or its cancellation ends the load (thrown); one that failed by itself (it crashed,
   * its library failed, it passed its start limit) is answered as `failed`, so that another may be tried.
   */
  async function readyForLoad(starting: Starting, path: string, signal: AbortSignal, deadline: LoadDeadline): Promise<{ started: Started } | { failed: KekahydeError }> {
    const watch = guard(starting.process, path, signal, deadline, true);
    try {
      const started = await starting.ready;
      if (started.process.alive) return { started };
      return { failed: new KekahydeError("ENGINE_FAILURE", "An engine process ended after it had started, before a load reached it.") };
    } catch (e) {
      const ours = watch.killedWith();
      if (ours !== null && e === ours) {
        const exit = await starting.process.exited;
        options.onEngineExit?.(reasonOf(exit), exit);
        throw ours;
      }
      return { failed: e as KekahydeError };
    } finally {
      watch.stop();
    }
  }

  /**
   * A ready engine process for a load: the spare if there is one (a new spare starts once the load is over),
   * else a new one; one that fails to start is replaced once, all within the load's time limit.
   */
  async function take(path: string, signal: AbortSignal, deadline: LoadDeadline): Promise<EngineProcess> {
    // Claimed before waiting for it: two loads at once must not both take the same spare process.
    const claimed = spareProcess();
    spare = null;
    const first = await readyForLoad(claimed, path, signal, deadline);
    if ("started" in first) return first.started.process;
    const second = await readyForLoad(start(), path, signal, deadline);
    if ("started" in second) return second.started.process;
    throw second.failed;
  }

  const planning = {
    policy: { allowedDirs: options.modelsDirs ?? [] },
    contextSize: options.contextSize,
    parallel: options.parallel,
    onGpu: async (s: { gpuLayers?: number }) => options.gpu !== "off" && s.gpuLayers !== 0 && (await spareReady()).gpu !== false,
    freeBytes: async (onGpu: boolean) => {
      if (!onGpu) return availableMemory();
      // A fresh reading: what the GPU has free now, from a new spare (the old one is stopped, not left behind).
      retireSpare();
      return (await spareReady()).vramFree ?? 0;
    },
  };

  if (options.spare) spareProcess();

  return {
    plan: (path, settings) => planModel(path, settings, planning),

    async load(plan: ModelPlan, { signal, onProgress }: LoadOptions): Promise<LoadedModel> {
      const deadline = loadDeadline(plan.path, options.maxLoadMs ?? null);
      const process = await take(plan.path, signal, deadline);
      return new Promise<LoadedModel>((resolve, reject) => {
        const watch = guard(process, plan.path, signal, deadline, false);
        // Once the load has ended (loaded or refused), its process's exit is the loaded model's to report.
        let settled = false;
        const finish = () => {
          settled = true;
          // The next spare starts once this load is over: starting a process (Node, node-llama-cpp, its binary
          // test) beside a load takes CPU from it, and on a small machine the load waits for it.
          if (options.spare && !disposed) spareProcess();
          watch.stop();
          off();
        };
        const off = process.onMessage((m) => {
          if (m.type === "loadProgress") onProgress?.(m.progress);
          else if (m.type === "loaded") {
            finish();
            resolve(new ProcessLoadedModel(process, { ...m.info, engine_pid: process.pid }, plan.path, { maxFirstTokenMs: options.maxFirstTokenMs ?? null, maxStallMs, abortGraceMs, stopGraceMs }, options.onEngineExit));
          } else if (m.type === "loadFailed") {
            finish();
            void process.stop(stopGraceMs);
            reject(errorFrom(m.error));
          }
        });
        void process.exited.then((exit) => {
          if (settled) return;
          finish();
          if (!exit.asked) options.onEngineExit?.(reasonOf(exit), exit);
          reject(lossError(plan.path, exit));
        });
        process.send({ type: "load", plan });
      });
    },

    pids: () => [...live].filter((p) => p.alive).map((p) => p.pid),

    async dispose() {
      disposed = true;
      spare = null;
      await Promise.all([...live].map((p) => p.terminate(stopGraceMs)));
    },
  };
}

interface Pending {
  resolve(result: JobResult): void;
  reject(error: KekahydeError): void;
  /** Where a generation's text and counts go (none for other jobs). */
  options: Pick<GenerateOptions, "onText" | "onProgress">;
  firstToken: ReturnType<typeof setTimeout> | undefined;
  /** Set once a generation has had its first token: ends it when the next one is too long in coming. */
  stall: ReturnType<typeof setTimeout> | undefined;
  /** Tokens the generation has produced so far (what a stall's error says). */
  completionTokens: number;
  grace: ReturnType<typeof setTimeout> | undefined;
  /** Stops listening to the request's abort signal (once it has ended, an abort means nothing). */
  unlisten(): void;
}

/** A model loaded in an engine process. */
class ProcessLoadedModel implements LoadedModel {
  readonly lost: Promise<KekahydeError>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private disposing: Promise<void> | null = null;

  constructor(
    private readonly process: EngineProcess,
    readonly info: ModelInfo,
    path: string,
    private readonly limits: { maxFirstTokenMs: number | null; maxStallMs: number | null; abortGraceMs: number; stopGraceMs: number },
    onEngineExit?: (reason: EngineExitReason, exit: EngineExit) => void,
  ) {
    process.onMessage((m) => this.receive(m));
    this.lost = new Promise<KekahydeError>((resolve) => {
      void process.exited.then((exit) => {
        if (exit.asked && !exit.reason) return this.failAll(new KekahydeError("NO_MODEL", "The model has been unloaded."));
        const error = lossError(path, exit);
        onEngineExit?.(reasonOf(exit), exit);
        // The runtime hears of the loss first, then each request its own end.
        resolve(error);
        this.failAll(error);
      });
    });
  }

  private failAll(error: KekahydeError): void {
    for (const [id, p] of this.pending) this.settle(id, p, () => p.reject(error));
  }

  private settle(id: number, p: Pending, answer: () => void): void {
    clearTimeout(p.firstToken);
    clearTimeout(p.stall);
    clearTimeout(p.grace);
    p.unlisten();
    this.pending.delete(id);
    answer();
  }

  private receive(m: FromEngine): void {
    if (m.type !== "stream" && m.type !== "done" && m.type !== "failed") return;
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === "stream") {
      if (m.text) p.options.onText?.(m.text);
      if (m.progress) {
        p.completionTokens = m.progress.completionTokens;
        p.options.onProgress?.(m.progress);
      }
      // Every message after the first token restarts the stall limit (before it, the first-token limit runs).
      if (p.completionTokens > 0 || m.text) {
        clearTimeout(p.firstToken);
        this.watchStall(p);
      }
    } else if (m.type === "done") this.settle(m.id, p, () => p.resolve(m.result));
    else this.settle(m.id, p, () => p.reject(errorFrom(m.error)));
  }

  /**
   * (Re)starts a generation's stall limit: an engine that stops producing tokens (stuck in native code, a
   * frozen process) would otherwise hold its request and its slot until someone sends /stop.
   */
  private watchStall(p: Pending): void {
    const { maxStallMs } = this.limits;
    if (maxStallMs === null || p.grace !== undefined) return;
    if (p.stall) {
      p.stall.refresh();
      return;
    }
    p.stall = setTimeout(
      () =>
        this.process.kill(
          new KekahydeError(
            "ENGINE_TIMEOUT",
            `No token for ${maxStallMs / 1000} s while generating (--max-stall-time): the engine stopped after ${p.completionTokens} token${p.completionTokens === 1 ? "" : "s"} (stuck in native code, or its process frozen); the engine process was stopped and the model unloaded (or loaded again in a fresh process). Raise --max-stall-time for a model this slow.`,
            { reason: "stall" },
          ),
        ),
      maxStallMs,
    );
  }

  generate(options: GenerateOptions): Promise<GenerateResult> {
    const { signal, onText, onProgress, ...request } = options;
    return this.call({ type: "generate", id: 0, request }, signal, { onText, onProgress }) as Promise<GenerateResult>;
  }

  embed(request: EmbedRequest, { signal }: JobOptions): Promise<EmbedResult> {
    return this.call({ type: "work", id: 0, work: { kind: "embed", request } }, signal) as Promise<EmbedResult>;
  }

  rank(request: RankRequest, { signal }: JobOptions): Promise<RankResult> {
    return this.call({ type: "work", id: 0, work: { kind: "rank", request } }, signal) as Promise<RankResult>;
  }

  tokenize(request: TokenizeRequest, { signal }: JobOptions): Promise<TokenizeResult> {
    return this.call({ type: "work", id: 0, work: { kind: "tokenize", request } }, signal) as Promise<TokenizeResult>;
  }

  detokenize(request: DetokenizeRequest, { signal }: JobOptions): Promise<DetokenizeResult> {
    return this.call({ type: "work", id: 0, work: { kind: "detokenize", request } }, signal) as Promise<DetokenizeResult>;
  }

  /**
   * Sends a job to the engine process and settles with its answer. A generation must show its first token
   * within --max-first-token-time, and each next one within --max-stall-time; any job that does not end
   * within the grace after its abort ends with its process.
   */
  private call(message: Extract<ToEngine, { type: "generate" | "work" }>, signal: AbortSignal, stream: Pending["options"] = {}): Promise<JobResult> {
    if (this.disposing || !this.process.alive) return Promise.reject(new KekahydeError("NO_MODEL", "The model has been unloaded."));
    const id = ++this.nextId;
    return new Promise<JobResult>((resolve, reject) => {
      const { maxFirstTokenMs, abortGraceMs } = this.limits;
      const firstToken =
        maxFirstTokenMs !== null && message.type === "generate"
          ? setTimeout(
              () =>
                this.process.kill(
                  new KekahydeError(
                    "ENGINE_TIMEOUT",
                    `No first token within ${maxFirstTokenMs / 1000} s (--max-first-token-time): the prompt, or the model's chat template, took too long. The engine process was stopped and the model unloaded; shorten the prompt or raise the limit.`,
                    { reason: "first_token_timeout" },
                  ),
                ),
              maxFirstTokenMs,
            )
          : undefined;
      const abort = () => {
        if (this.pending.get(id) !== pending) return;
        this.process.send({ type: "abort", id });
        // From now on the abort's grace is the limit that applies, not the stall limit.
        clearTimeout(pending.stall);
        pending.stall = undefined;
        // A generation that cannot stop (stuck in native code or a template) ends with its process.
        pending.grace = setTimeout(
          () =>
            this.process.kill(
              new KekahydeError("ENGINE_TIMEOUT", `The engine did not stop within ${abortGraceMs / 1000} s of being asked to; its process was stopped and the model unloaded.`, { reason: "stuck" }),
            ),
          abortGraceMs,
        );
      };
      const pending: Pending = { resolve, reject, options: stream, firstToken, stall: undefined, completionTokens: 0, grace: undefined, unlisten: () => signal.removeEventListener("abort", abort) };
      this.pending.set(id, pending);
      if (signal.aborted) abort();
      else signal.addEventListener("abort", abort, { once: true });
      this.process.send({ ...message, id });
    });
  }

  dispose(): Promise<void> {
    this.disposing ??= this.process.stop(this.limits.stopGraceMs).then(() => {});
    return this.disposing;
  }
}
