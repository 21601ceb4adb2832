import type { Actor } from "xstate";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { logLinesDropped } from "../log.ts";
import type { RuntimeFeed } from "../machines/feed.ts";
import type { SupervisorMachine } from "../machines/supervisorMachine.ts";
import { stateName, type RuntimeStateName } from "../machines/selectors.ts";

const STATES: RuntimeStateName[] = ["empty", "loading", "replacing", "idle", "generating", "cancelling", "unloading", "stopping", "stopped"];

/** Prometheus metrics of the daemon, fed by the machine (generations, loads, state) and by the HTTP layer. */
export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: "kekahyde_http_requests_total", help: "HTTP requests by route, method and status", labelNames: ["route", "method", "status"], registers: [this.registry] });
  /**
   * Time from the request's arrival in the middleware chain to its response sent, as the daemon itself sees
   * it: under load, the difference from what clients measure is time spent waiting for a CPU, not in here.
   */
  private readonly requestSeconds = new Histogram({
    name: "kekahyde_http_request_duration_seconds",
    help: "HTTP request handling time by route and method",
    labelNames: ["route", "method"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  private readonly completionTokens = new Counter({ name: "kekahyde_generated_tokens_total", help: "Tokens generated", registers: [this.registry] });
  private readonly promptTokens = new Counter({ name: "kekahyde_prompt_tokens_total", help: "Prompt tokens processed", registers: [this.registry] });
  private readonly generations = new Counter({ name: "kekahyde_generations_total", help: "Generations by finish reason", labelNames: ["finish_reason"], registers: [this.registry] });
  private readonly draftTokens = new Counter({ name: "kekahyde_draft_tokens_total", help: "Speculative decoding: tokens drafted (by a draft model or prompt lookup) and checked by the model", registers: [this.registry] });
  private readonly acceptedDraftTokens = new Counter({ name: "kekahyde_draft_tokens_accepted_total", help: "Speculative decoding: drafted tokens the model accepted", registers: [this.registry] });
  private readonly draftAcceptance = new Gauge({ name: "kekahyde_draft_acceptance_rate", help: "Speculative decoding: share of drafted tokens accepted in the last generation that drafted", registers: [this.registry] });
  private readonly tokensPerSecond = new Gauge({ name: "kekahyde_generation_tokens_per_second", help: "Generation speed of the last generation (after its first token)", registers: [this.registry] });
  private readonly ttft = new Histogram({
    name: "kekahyde_time_to_first_token_seconds",
    help: "Time from the start of a generation to its first token",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly loadSeconds = new Histogram({ name: "kekahyde_model_load_seconds", help: "Time to load a model (request to idle)", buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry] });
  private readonly engineExits = new Counter({
    name: "kekahyde_engine_process_exits_total",
    help: "Engine processes that ended without being asked, by reason (crash, load_timeout, first_token_timeout, stuck, stall, cancelled)",
    labelNames: ["reason"],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "kekahyde_" });
    new Gauge({
      name: "kekahyde_log_lines_dropped",
      help: "Log lines dropped because the log reader did not keep up (a stalled pipe)",
      registers: [this.registry],
      collect() {
        this.set(logLinesDropped());
      },
    });
    for (const reason of ["crash", "load_timeout", "first_token_timeout", "stuck", "stall", "cancelled"]) this.engineExits.inc({ reason }, 0);
  }

  /** An engine process ended without being asked. */
  engineEnded(reason: string): void {
    this.engineExits.inc({ reason });
  }

  /** Feeds the metrics from the machines: gauges read their snapshots, counters follow the feed. */
  watch(supervisor: Actor<SupervisorMachine>, feed: RuntimeFeed): this {
    const runtimes = () => Object.values(supervisor.getSnapshot().context.models).map((m) => m.ref.getSnapshot());
    new Gauge({
      name: "kekahyde_queue_length",
      help: "Requests waiting for a free slot, all models together",
      registers: [this.registry],
      collect() {
        this.set(runtimes().reduce((n, s) => n + s.context.queue.length, 0));
      },
    });
    new Gauge({
      name: "kekahyde_state",
      help: "Models in each state of the runtime machine",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const states = runtimes().map(stateName);
        for (const s of STATES) this.set({ state: s }, states.filter((x) => x === s).length);
      },
    });
    new Gauge({
      name: "kekahyde_model_loaded",
      help: "Models loaded",
      registers: [this.registry],
      collect() {
        this.set(runtimes().filter((s) => s.context.model !== null).length);
      },
    });

    feed.subscribe((e) => {
      if (e.type !== "generation" || e.stats.endedAt === null) return;
      const g = { ...e.stats, endedAt: e.stats.endedAt };
      this.completionTokens.inc(g.completionTokens);
      this.promptTokens.inc(g.promptTokens ?? 0);
      this.generations.inc({ finish_reason: g.finishReason ?? "unknown" });
      if (g.draftTokens != null) {
        this.draftTokens.inc(g.draftTokens);
        this.acceptedDraftTokens.inc(g.acceptedDraftTokens ?? 0);
        if (g.draftTokens > 0) this.draftAcceptance.set((g.acceptedDraftTokens ?? 0) / g.draftTokens);
      }
      if (g.firstTokenMs !== null) this.ttft.observe(g.firstTokenMs / 1000);
      const decodeMs = g.endedAt - g.startedAt - (g.firstTokenMs ?? 0);
      if (g.completionTokens > 1 && decodeMs > 0) this.tokensPerSecond.set(((g.completionTokens - 1) * 1000) / decodeMs);
    });
    const loadingSince = new Map<string, number>();
    feed.subscribe((e) => {
      if (e.type !== "transition") return;
      if (e.state === "loading") loadingSince.set(e.model, Date.now());
      else if (e.from === "loading" && loadingSince.has(e.model)) {
        if (e.state === "idle" && e.event === "LOAD.DONE") this.loadSeconds.observe((Date.now() - loadingSince.get(e.model)!) / 1000);
        loadingSince.delete(e.model);
      }
    });
    return this;
  }

  recordRequest(route: string, method: string, status: number, seconds: number): void {
    this.requests.inc({ route, method, status: String(status) });
    this.requestSeconds.observe({ route, method }, seconds);
  }
}
