import { basename } from "node:path";
import si from "systeminformation";
import type { GenerateResult } from "../../domain/generation.ts";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, JobResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../../domain/jobs.ts";
import type { FlashAttentionMode, GpuMode, ModelInfo, ModelPlan } from "../../domain/models.ts";
import { KekahydeError } from "../../errors.ts";
import { planModel } from "../planning.ts";
import type { Engine, GenerateOptions, JobOptions, LoadedModel, LoadOptions } from "../types.ts";
import { EngineProcess, errorFrom, nativeMessage, type EngineExit } from "./engineProcess.ts";
import type { FromEngine, ToEngine } from "./protocol.ts";

/** Why an engine process ended, as /metrics counts it. */
export type EngineExitReason = "crash" | "load_timeout" | "first_token_timeout" | "stuck" | "cancelled";

export interface ProcessEngineOptions {
  gpu: GpuMode;
  threads: number;
  contextSize: number;
  flashAttention?: FlashAttentionMode;
  parallel?: number;
  /** Folders models may be loaded from; empty: anywhere. */
  modelsDirs?: readonly string[];
  /** Longest a load may take before its engine process is killed; null: no limit. */
  maxLoadMs?: number | null;
  /** Longest a generation may wait for its first token (prompt, template) before the process is killed. */
  maxFirstTokenMs?: number | null;
  /** How long a stopped generation may take to end before its engine is considered stuck and killed. */
  abortGraceMs?: number;
  /** How long an engine process may take to free its model and exit when asked. */
  stopGraceMs?: number;
  /** Keep one engine process started ahead, so that a load does not wait for one to start. */
  spare?: boolean;
  /** Bytes of memory available for a new model; defaults to the machine's available memory. */
  availableMemory?: () => Promise<number>;
  /** llama.cpp's own log lines and engine processes' stderr. */
  onNativeLog?: (level: string, message: string) => void;
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
  const availableMemory = options.availableMemory ?? (async () => (await si.mem()).available);
  const processOptions = { gpu: options.gpu, threads: options.threads, contextSize: options.contextSize, flashAttention: options.flashAttention ?? "auto", parallel: options.parallel ?? 1 };
  let spare: Promise<Started> | null = null;
  let disposed = false;

  /** Starts an engine process and its library; refuses with the reason when the library cannot start. */
  function start(): Promise<Started> {
    const process = new EngineProcess(processOptions, options.onNativeLog);
    live.add(process);
    void process.exited.then(() => live.delete(process));
    return new Promise<Started>((resolve, reject) => {
      const off = process.onMessage((m) => {
        if (m.type === "ready") {
          off();
          resolve({ process, gpu: m.gpu, vramFree: m.vramFree });
        } else if (m.type === "probeFailed") {
          off();
          void process.terminate(stopGraceMs);
          reject(errorFrom(m.error));
        }
      });
      void process.exited.then((exit) => {
        off();
        reject(new KekahydeError("ENGINE_FAILURE", `An engine process could not start (${exit.signal ?? `exit code ${exit.code}`}): ${nativeMessage(exit) ?? "no message"}.`));
      });
      process.send({ type: "probe" });
    });
  }

  /** The spare process, started now if there is none (or it has ended). */
  function spareProcess(): Promise<Started> {
    if (!spare) {
      spare = start();
      spare.catch(() => (spare = null));
    }
    return spare;
  }

  /** A started process for a load: the spare if there is one (a new spare starts once the load is over). */
  async function take(): Promise<Started> {
    // Claimed before waiting for it: two loads at once must not both take the same spare process.
    const claimed = spareProcess();
    spare = null;
    let started = await claimed.catch(() => null);
    if (!started?.process.alive) started = await start();
    return started;
  }

  const planning = {
    policy: { allowedDirs: options.modelsDirs ?? [] },
    contextSize: options.contextSize,
    parallel: options.parallel,
    onGpu: async (s: { gpuLayers?: number }) => options.gpu !== "off" && s.gpuLayers !== 0 && (await spareProcess()).gpu !== false,
    freeBytes: async (onGpu: boolean) => {
      if (!onGpu) return availableMemory();
      // A fresh reading: what the GPU has free now.
      spare = null;
      return (await spareProcess()).vramFree ?? 0;
    },
  };

  if (options.spare) void spareProcess().catch(() => {});

  return {
    plan: (path, settings) => planModel(path, settings, planning),

    async load(plan: ModelPlan, { signal, onProgress }: LoadOptions): Promise<LoadedModel> {
      const { process } = await take();
      return new Promise<LoadedModel>((resolve, reject) => {
        const timer =
          options.maxLoadMs != null
            ? setTimeout(
                () =>
                  process.kill(
                    new KekahydeError(
                      "ENGINE_TIMEOUT",
                      `Loading ${basename(plan.path)} took longer than ${options.maxLoadMs! / 1000} s (--max-load-time); its engine process was stopped. Raise --max-load-time for a large model on slow storage.`,
                      { path: plan.path, reason: "load_timeout" },
                    ),
                  ),
                options.maxLoadMs,
              )
            : undefined;
        const cancel = () => process.kill(new KekahydeError("MODEL_INVALID", `loading ${plan.path} was cancelled`, { path: plan.path, reason: "cancelled" }));
        signal.addEventListener("abort", cancel, { once: true });
        // Once the load has ended (loaded or refused), its process's exit is the loaded model's to report.
        let settled = false;
        const finish = () => {
          settled = true;
          // The next spare starts once this load is over: starting a process (Node, node-llama-cpp, its binary
          // test) beside a load takes CPU from it, and on a small machine the load waits for it.
          if (options.spare && !disposed) void spareProcess().catch(() => {});
          clearTimeout(timer);
          signal.removeEventListener("abort", cancel);
          off();
        };
        const off = process.onMessage((m) => {
          if (m.type === "loadProgress") onProgress?.(m.progress);
          else if (m.type === "loaded") {
            finish();
            resolve(new ProcessLoadedModel(process, { ...m.info, engine_pid: process.pid }, plan.path, { maxFirstTokenMs: options.maxFirstTokenMs ?? null, abortGraceMs, stopGraceMs }, options.onEngineExit));
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
    private readonly limits: { maxFirstTokenMs: number | null; abortGraceMs: number; stopGraceMs: number },
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
        if (m.progress.completionTokens > 0) clearTimeout(p.firstToken);
        p.options.onProgress?.(m.progress);
      }
    } else if (m.type === "done") this.settle(m.id, p, () => p.resolve(m.result));
    else this.settle(m.id, p, () => p.reject(errorFrom(m.error)));
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
   * within --max-first-token-time; any job that does not end within the grace after its abort ends with its
   * process.
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
        // A generation that cannot stop (stuck in native code or a template) ends with its process.
        pending.grace = setTimeout(
          () =>
            this.process.kill(
              new KekahydeError("ENGINE_TIMEOUT", `The engine did not stop within ${abortGraceMs / 1000} s of being asked to; its process was stopped and the model unloaded.`, { reason: "stuck" }),
            ),
          abortGraceMs,
        );
      };
      const pending: Pending = { resolve, reject, options: stream, firstToken, grace: undefined, unlisten: () => signal.removeEventListener("abort", abort) };
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
