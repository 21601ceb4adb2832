import type { Actor } from "xstate";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RuntimeFeed } from "../machines/feed.ts";
import type { RuntimeMachine } from "../machines/runtimeMachine.ts";
import { stateName, type RuntimeStateName } from "../machines/selectors.ts";

const STATES: RuntimeStateName[] = ["empty", "loading", "idle", "generating", "cancelling", "stopping", "stopped"];

/** Prometheus metrics of the daemon, fed by the machine (generations, loads, state) and by the HTTP layer. */
export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: "kekahyde_http_requests_total", help: "HTTP requests by route, method and status", labelNames: ["route", "method", "status"], registers: [this.registry] });
  private readonly completionTokens = new Counter({ name: "kekahyde_generated_tokens_total", help: "Tokens generated", registers: [this.registry] });
  private readonly promptTokens = new Counter({ name: "kekahyde_prompt_tokens_total", help: "Prompt tokens processed", registers: [this.registry] });
  private readonly generations = new Counter({ name: "kekahyde_generations_total", help: "Generations by finish reason", labelNames: ["finish_reason"], registers: [this.registry] });
  private readonly tokensPerSecond = new Gauge({ name: "kekahyde_generation_tokens_per_second", help: "Generation speed of the last generation (after its first token)", registers: [this.registry] });
  private readonly ttft = new Histogram({
    name: "kekahyde_time_to_first_token_seconds",
    help: "Time from the start of a generation to its first token",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly loadSeconds = new Histogram({ name: "kekahyde_model_load_seconds", help: "Time to load a model (request to idle)", buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry] });

  constructor(runtime: Actor<RuntimeMachine>, feed: RuntimeFeed) {
    collectDefaultMetrics({ register: this.registry, prefix: "kekahyde_" });
    new Gauge({
      name: "kekahyde_queue_length",
      help: "Requests waiting behind the running generation",
      registers: [this.registry],
      collect() {
        this.set(runtime.getSnapshot().context.queue.length);
      },
    });
    new Gauge({
      name: "kekahyde_state",
      help: "1 for the runtime machine's current state",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const current = stateName(runtime.getSnapshot());
        for (const s of STATES) this.set({ state: s }, s === current ? 1 : 0);
      },
    });
    new Gauge({
      name: "kekahyde_model_loaded",
      help: "1 when a model is loaded",
      registers: [this.registry],
      collect() {
        this.set(runtime.getSnapshot().context.model ? 1 : 0);
      },
    });

    let counted: number | null = null;
    runtime.subscribe((snapshot) => {
      const g = snapshot.context.generation;
      if (!g || g.endedAt === null || g.startedAt === counted) return;
      counted = g.startedAt;
      this.completionTokens.inc(g.completionTokens);
      this.promptTokens.inc(g.promptTokens ?? 0);
      this.generations.inc({ finish_reason: g.finishReason ?? "unknown" });
      if (g.firstTokenMs !== null) this.ttft.observe(g.firstTokenMs / 1000);
      const decodeMs = g.endedAt - g.startedAt - (g.firstTokenMs ?? 0);
      if (g.completionTokens > 1 && decodeMs > 0) this.tokensPerSecond.set(((g.completionTokens - 1) * 1000) / decodeMs);
    });
    let loadingSince: number | null = null;
    feed.subscribe((e) => {
      if (e.type !== "transition") return;
      if (e.state === "loading") loadingSince = Date.now();
      else if (e.from === "loading" && loadingSince !== null) {
        if (e.state === "idle" && e.event === "LOAD.DONE") this.loadSeconds.observe((Date.now() - loadingSince) / 1000);
        loadingSince = null;
      }
    });
  }

  recordRequest(route: string, method: string, status: number): void {
    this.requests.inc({ route, method, status: String(status) });
  }
}
