import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createActor, waitFor, type Actor } from "xstate";
import { createCatalogue, defaultDigestCacheFile, defaultModelsDir } from "./catalogue/index.ts";
import { ConfigError, type ServeConfig } from "./config.ts";
import { createProcessEngine } from "./engine/process/processEngine.ts";
import { daemonLoad, startAgentCheck } from "./fleet/agentCheck.ts";
import { detectDefaultThreads } from "./engine/threads.ts";
import type { Engine } from "./engine/types.ts";
import type { Logger } from "./log.ts";
import type { LoadResult } from "./machines/runtimeMachine.ts";
import { createSupervisorLogic } from "./machines/logic.ts";
import type { SupervisorMachine } from "./machines/supervisorMachine.ts";
import { RuntimeFeed } from "./machines/feed.ts";
import { modelView } from "./server/statusView.ts";
import { statelyInspector } from "./machines/statelyInspector.ts";
import { createTicket } from "./machines/ticket.ts";
import { createResourceSampler } from "./monitor/resourceSampler.ts";
import { isLoopbackName } from "./server/addresses.ts";
import { createApp } from "./server/app.ts";
import { DaemonMetrics } from "./server/metrics.ts";

export interface Daemon {
  url: string;
  supervisor: Actor<SupervisorMachine>;
  /** Every state change, model-set change, finished generation and resource sample, as it happens. */
  feed: RuntimeFeed;
  threads: number;
  /** Cancels generation, frees the model and the engine, closes the server. Safe to call twice. */
  close(): Promise<void>;
}

export interface DaemonOptions {
  log: Logger;
  /** Socket timeouts (tests shorten them). */
  timeouts?: { headersMs: number; requestMs: number };
  /** Replaces the node-llama-cpp engine (fast machine tests only; the daemon's own tests use the real one). */
  engine?: Engine;
}

/** One log line per state change (with the event that caused it), per change of the model set, per quarter of a load. */
function logTransitions(feed: RuntimeFeed, log: Logger): void {
  feed.subscribe((e) => {
    if (e.type === "transition") {
      log.info({ event: "state", model: e.model, from: e.from, to: e.state, cause: e.event, queue_length: e.queue_length, last_error: e.last_error ?? undefined }, `${e.model}: state ${e.from} -> ${e.state}`);
    } else if (e.type === "models") {
      log.info({ event: "models", cause: e.event, models: e.models, departing: e.departing }, `models: ${e.models.map((m) => `${m.name} (${m.phase})`).join(", ") || "none"}`);
    } else if (e.type === "load_progress") {
      log.info({ event: "load_progress", model: e.model, path: e.path, progress: e.progress }, `loading ${e.model}`);
    }
  });
}

/** Refuses configurations that would expose the daemon: a non-loopback address needs an API key. */
export function checkExposure(config: ServeConfig): void {
  if (isLoopbackName(config.host) || config.apiKey !== null || config.insecureNoApiKey) return;
  throw new ConfigError(
    `refusing to listen on ${config.host} without an API key: anyone who can reach it could run and load models. ` +
      "Set --api-key (or KEKAHYDE_API_KEY), or listen on 127.0.0.1. --insecure-no-api-key overrides this (dangerous).",
  );
}

export async function startDaemon(config: ServeConfig, { log, engine: givenEngine, timeouts }: DaemonOptions): Promise<Daemon> {
  checkExposure(config);
  const threads = config.threads ?? (await detectDefaultThreads());
  const metrics = new DaemonMetrics();
  // Each model's engine runs in its own process: the daemon never loads llama.cpp (see docs/architecture.md).
  const processEngine = givenEngine
    ? null
    : createProcessEngine({
        gpu: config.gpu,
        threads,
        contextSize: config.contextSize,
        flashAttention: config.flashAttention,
        parallel: config.parallel,
        modelsDirs: config.modelsDirs,
        maxLoadMs: config.maxLoadSeconds === null ? null : config.maxLoadSeconds * 1000,
        maxFirstTokenMs: config.maxFirstTokenSeconds === null ? null : config.maxFirstTokenSeconds * 1000,
        maxStallMs: config.maxStallSeconds === null ? null : config.maxStallSeconds * 1000,
        spare: config.spareEngine,
        onNativeLog: (level, message) => log.warn({ event: "llama_log", level }, message),
        onEngineExit: (reason, exit) => {
          metrics.engineEnded(reason);
          log.error({ event: "engine_exit", reason, exit_code: exit.code, signal: exit.signal, stderr: exit.stderr.slice(-5) }, `an engine process ended: ${reason}`);
        },
      });
  const engine = givenEngine ?? processEngine!;
  // The models by name: --models-dir, or the default directory (which does not restrict /load_model's paths).
  const catalogue = createCatalogue({
    dirs: config.modelsDirs.length > 0 ? config.modelsDirs : [defaultModelsDir()],
    digestCacheFile: defaultDigestCacheFile(),
    onWarning: (message, details) => log.warn({ event: "catalogue", ...details }, message),
  });
  // A first scan at start-up: clashes are logged now and digests start computing in the background.
  void catalogue.list().catch(() => {});
  const feed = new RuntimeFeed();
  // Assigned once createActor has returned; the inspector's closure may run before then and reads undefined.
  // eslint-disable-next-line prefer-const -- a `const supervisor` read from that closure would throw (TDZ) if it ran during createActor
  let supervisorRef: Actor<SupervisorMachine> | undefined;
  const toFeed = feed.inspector(() => supervisorRef);
  const stately = config.inspectUrl ? await statelyInspector(config.inspectUrl) : null;
  if (stately) log.info({ event: "inspect", url: config.inspectUrl }, `sending machine events to ${config.inspectUrl}`);
  const supervisor = createActor(createSupervisorLogic(engine, createResourceSampler(() => processEngine?.pids() ?? [])), {
    inspect: (e) => {
      toFeed(e);
      stately?.observe(e);
    },
    input: {
      monitorIntervalMs: config.monitorIntervalMs,
      maxQueue: config.maxQueue,
      maxGenerationMs: config.maxGenerationSeconds === null ? null : config.maxGenerationSeconds * 1000,
      maxModels: config.maxModels,
      maxMemory: config.maxMemory,
      keepAliveMs: config.keepAliveMs,
      parallel: config.parallel,
    },
  });
  supervisorRef = supervisor;
  logTransitions(feed, log);
  supervisor.start();
  const startedAt = Date.now();
  let draining = false;

  const app = createApp(
    { supervisor, startedAt, defaultThreads: threads, feed, metrics: metrics.watch(supervisor, feed), modelsDirs: config.modelsDirs, catalogue, draining: () => draining },
    {
      listenHost: config.host,
      allowedHosts: config.allowedHosts,
      allowedOrigins: config.allowedOrigins,
      apiKey: config.apiKey,
      maxBodyBytes: config.maxBodyBytes,
      rateLimit: config.rateLimit,
    },
    log,
  );
  // Slow clients must not hold sockets forever: headers within 30 s, the whole request (not the answer,
  // which may take minutes of generation) within 60 s, checked every second.
  // Koa's handler settles its own promise (errors go to its error handling), so nothing awaits it here.
  const handle = app.callback();
  const server: Server = createServer({ connectionsCheckingInterval: 1_000 }, (req, res) => void handle(req, res));
  server.headersTimeout = timeouts?.headersMs ?? 30_000;
  server.requestTimeout = timeouts?.requestMs ?? 60_000;
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
  log.info(
    { event: "listening", url, threads, context_size: config.contextSize, gpu: config.gpu, max_models: config.maxModels, parallel: config.parallel, keep_alive_ms: config.keepAliveMs },
    `Kekahyde listening on ${url}`,
  );
  // HAProxy's agent check: this daemon's free share of slots, per model (docs/scale-out.md).
  const agent =
    config.agentPort === null
      ? null
      : await startAgentCheck({
          host: config.host,
          port: config.agentPort,
          load: (model) => {
            const snapshot = supervisor.getSnapshot();
            const models = Object.values(snapshot.context.models).map((m) => modelView(m));
            return daemonLoad(models, { draining: draining || snapshot.status !== "active", maxQueue: config.maxQueue, model });
          },
        }).catch((e: Error) => {
          server.close();
          throw e;
        });
  if (agent) log.info({ event: "agent", port: agent.port }, `HAProxy agent on port ${agent.port}`);
  if (!isLoopbackName(config.host) && config.apiKey === null) {
    log.warn({ event: "insecure", host: config.host }, "listening on a non-loopback address WITHOUT an API key (--insecure-no-api-key)");
  }

  if (config.model) {
    const ticket = createTicket<LoadResult>();
    const settings = { ...(config.draftModel && { draftModel: config.draftModel }), ...(config.speculative === "lookup" && { speculative: "lookup" as const }) };
    supervisor.send({ type: "LOAD", path: config.model, settings, ticket });
    ticket.promise.then(
      ({ model }) => log.info({ event: "model_loaded", model }, `loaded ${model.name}`),
      (e: Error) => log.error({ event: "model_load_failed", path: config.model, message: e.message }, e.message),
    );
  }

  let closing: Promise<void> | null = null;
  const drainMs = (config.drainSeconds ?? (config.agentPort !== null ? 2 : 0)) * 1000;
  const close = () =>
    (closing ??= (async () => {
      if (drainMs > 0) {
        // A load balancer learns from /health and the agent that this daemon is going, and sends it nothing new.
        draining = true;
        log.info({ event: "draining", ms: drainMs }, `draining for ${drainMs / 1000} s`);
        await new Promise((r) => setTimeout(r, drainMs));
      }
      log.info({ event: "shutdown" }, "shutting down");
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      supervisor.send({ type: "SHUTDOWN" });
      await waitFor(supervisor, (s) => s.status === "done", { timeout: 30_000 }).catch(() => {});
      supervisor.stop();
      stately?.stop();
      catalogue.close();
      await engine.dispose();
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 2_000).unref();
      await serverClosed;
      await agent?.close();
      log.info({ event: "stopped" }, "stopped");
    })());

  return { url, supervisor, feed, threads, close };
}
