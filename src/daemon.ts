import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createActor, waitFor, type Actor } from "xstate";
import type { ServeConfig } from "./config.ts";
import { createLlamaEngine } from "./engine/llamaEngine.ts";
import { detectDefaultThreads } from "./engine/threads.ts";
import type { Engine } from "./engine/types.ts";
import type { Logger } from "./log.ts";
import { runtimeMachine, type LoadResult, type RuntimeMachine } from "./machines/runtimeMachine.ts";
import { stateName } from "./machines/selectors.ts";
import { createTicket } from "./machines/ticket.ts";
import { createResourceSampler } from "./monitor/resourceSampler.ts";
import { createApp } from "./server/app.ts";

export interface Daemon {
  url: string;
  runtime: Actor<RuntimeMachine>;
  threads: number;
  /** Cancels generation, frees the model and the engine, closes the server. Safe to call twice. */
  close(): Promise<void>;
}

export interface DaemonOptions {
  log: Logger;
  /** Replaces the node-llama-cpp engine (fast machine tests only; the daemon's own tests use the real one). */
  engine?: Engine;
}

/** Logs each change of the user-visible state with the event that caused it. */
function logTransitions(runtime: Actor<RuntimeMachine>, log: Logger): void {
  let previous = stateName(runtime.getSnapshot());
  let lastProgressStep = -1;
  runtime.subscribe((snapshot) => {
    const state = stateName(snapshot);
    if (state !== previous) {
      log.info({ event: "state", from: previous, to: state, model: snapshot.context.model?.info.name ?? null, last_error: snapshot.context.lastError?.message }, `state ${previous} -> ${state}`);
      previous = state;
      lastProgressStep = -1;
    }
    const progress = snapshot.context.load?.progress;
    if (progress !== undefined && Math.floor(progress * 4) > lastProgressStep) {
      lastProgressStep = Math.floor(progress * 4);
      log.info({ event: "load_progress", path: snapshot.context.load?.path, progress: Math.round(progress * 100) / 100 }, "loading model");
    }
  });
}

export async function startDaemon(config: ServeConfig, { log, engine: givenEngine }: DaemonOptions): Promise<Daemon> {
  const threads = config.threads ?? (await detectDefaultThreads());
  const engine =
    givenEngine ??
    createLlamaEngine({
      gpu: config.gpu,
      threads,
      contextSize: config.contextSize,
      onNativeLog: (level, message) => log.warn({ event: "llama_log", level }, message),
    });
  const runtime = createActor(runtimeMachine, {
    input: { engine, sampleResources: createResourceSampler(), monitorIntervalMs: config.monitorIntervalMs, maxQueue: config.maxQueue },
  });
  logTransitions(runtime, log);
  runtime.start();
  const startedAt = Date.now();

  const app = createApp({ runtime, startedAt, defaultThreads: threads }, log);
  const server: Server = createServer(app.callback());
  // Slow clients must not hold sockets forever.
  server.headersTimeout = 30_000;
  server.requestTimeout = 0; // generations can legitimately take minutes
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log.info({ event: "listening", url, threads, context_size: config.contextSize, gpu: config.gpu }, `Kekahyde listening on ${url}`);

  if (config.model) {
    const ticket = createTicket<LoadResult>();
    runtime.send({ type: "LOAD", path: config.model, settings: {}, ticket });
    ticket.promise.then(
      ({ model }) => log.info({ event: "model_loaded", model }, `loaded ${model.name}`),
      (e: Error) => log.error({ event: "model_load_failed", path: config.model, message: e.message }, e.message),
    );
  }

  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      log.info({ event: "shutdown" }, "shutting down");
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      runtime.send({ type: "SHUTDOWN" });
      await waitFor(runtime, (s) => s.status === "done", { timeout: 30_000 }).catch(() => {});
      runtime.stop();
      await engine.dispose();
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 2_000).unref();
      await serverClosed;
      log.info({ event: "stopped" }, "stopped");
    })());

  return { url, runtime, threads, close };
}
