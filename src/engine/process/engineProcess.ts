import { fork, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { KekahydeError } from "../../errors.ts";
import type { EngineProcessOptions, FromEngine, SerializedError, ToEngine } from "./protocol.ts";

/** How an engine process ended, and why if the daemon ended it. */
export interface EngineExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines llama.cpp (or Node) printed to stderr before the end: a GGML_ASSERT, an abort message. */
  stderr: string[];
  /** Set when the daemon killed it (a time limit, a stuck generation, a cancelled load). */
  reason: KekahydeError | null;
  /** Set when the daemon asked it to end (unload, shutdown): not a crash. */
  asked: boolean;
}

const STDERR_LINES = 20;

/**
 * The engine process's entry: the TypeScript source when the daemon itself runs from source (tests, a
 * checkout being edited), else the compiled one beside this module in dist/, bundled with node-llama-cpp
 * into one file when `npm run build` made the bundle (scripts/bundle.mjs: it starts faster). Preloaded before
 * it: the hook that remembers node-llama-cpp's passed binary test (../binaryCheck.ts), so that not every engine
 * process pays for a test process of its own.
 */
function hostEntry(): { path: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith(".ts");
  const ext = fromSource ? ".ts" : ".js";
  const binaryCheck = new URL(`../binaryCheck${ext}`, import.meta.url).href;
  const bundled = fileURLToPath(new URL("./host.bundle.mjs", import.meta.url));
  const path = !fromSource && existsSync(bundled) ? bundled : fileURLToPath(new URL(`./host${ext}`, import.meta.url));
  return { path, execArgv: [...(fromSource ? ["--import", "tsx"] : []), "--import", binaryCheck] };
}

export const errorFrom = (e: SerializedError): KekahydeError => new KekahydeError(e.code, e.message, e.details);

/**
 * One engine process, as the daemon holds it: started with an IPC channel, spoken to in messages, watched
 * until it ends. `exited` settles once, however it ends.
 */
export class EngineProcess {
  readonly pid: number;
  readonly exited: Promise<EngineExit>;
  private readonly child: ChildProcess;
  private readonly stderr: string[] = [];
  private partialLine = "";
  private reason: KekahydeError | null = null;
  private asked = false;
  private done = false;
  private readonly listeners = new Set<(message: FromEngine) => void>();

  constructor(options: EngineProcessOptions, onNativeLog?: (level: string, message: string) => void) {
    const entry = hostEntry();
    this.child = fork(entry.path, [JSON.stringify(options)], {
      execArgv: entry.execArgv,
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      // Its own process group is not wanted: a terminal's Ctrl-C reaching both is fine, the daemon stops it anyway.
      detached: false,
    });
    this.pid = this.child.pid ?? -1;
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (chunk: string) => {
      const lines = (this.partialLine + chunk).split("\n");
      this.partialLine = lines.pop() ?? "";
      for (const line of lines) this.keepStderr(line, onNativeLog);
    });
    this.child.on("message", (message: FromEngine) => {
      for (const listener of this.listeners) listener(message);
    });
    this.exited = new Promise<EngineExit>((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.done = true;
        if (this.partialLine) this.keepStderr(this.partialLine, onNativeLog);
        resolve({ code, signal, stderr: [...this.stderr], reason: this.reason, asked: this.asked });
      });
      // A process that could not even start (no node binary, no memory) ends the same way for its holder.
      this.child.once("error", () => {
        if (!this.done) this.child.kill("SIGKILL");
      });
    });
  }

  private keepStderr(line: string, onNativeLog?: (level: string, message: string) => void): void {
    const text = line.trimEnd();
    if (!text) return;
    this.stderr.push(text.length > 500 ? `${text.slice(0, 500)}…` : text);
    if (this.stderr.length > STDERR_LINES) this.stderr.shift();
    onNativeLog?.("stderr", text);
  }

  get alive(): boolean {
    return !this.done;
  }

  /** Subscribes to its messages; returns the unsubscribe. */
  onMessage(listener: (message: FromEngine) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(message: ToEngine): void {
    if (this.done || !this.child.connected) return;
    try {
      this.child.send(message);
    } catch {
      // It has just ended; `exited` tells its holder.
    }
  }

  /** Ends it at once, for `reason` (reported to whoever waits on it). */
  kill(reason: KekahydeError): void {
    if (this.done) return;
    this.reason ??= reason;
    this.child.kill("SIGKILL");
  }

  /**
   * Asks it to free its model and end (`dispose`), and kills it if it has not ended after `graceMs` (a process
   * stuck in native code or in a long render cannot answer).
   */
  async stop(graceMs: number): Promise<EngineExit> {
    if (!this.done) {
      this.asked = true;
      this.send({ type: "dispose" });
      const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
      timer.unref();
      const exit = await this.exited;
      clearTimeout(timer);
      return exit;
    }
    return this.exited;
  }

  /** Ends it quickly: SIGTERM, then SIGKILL after `graceMs`. For a process holding no model. */
  async terminate(graceMs: number): Promise<void> {
    if (this.done) return;
    this.asked = true;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    timer.unref();
    await this.exited;
    clearTimeout(timer);
  }
}

/** The last line an engine process printed that says what went wrong (GGML_ASSERT, an exception, abort). */
export function nativeMessage(exit: EngineExit): string | null {
  const telling = [...exit.stderr].reverse().find((l) => /GGML_ASSERT|error|fatal|abort|exception|terminate|out_of_range|invalid|failed/i.test(l));
  return telling ?? exit.stderr.at(-1) ?? null;
}
