import { WebSocket } from "ws";
import type { InspectionEvent } from "xstate";
import type { SupervisorContext } from "./supervisorMachine.ts";
import type { RuntimeContext } from "./runtimeMachine.ts";

/**
 * `--inspect ws://…`: sends the machine's inspection events to a Stately inspector over WebSocket, for people
 * who use Stately's tools. Off by default; only the URL given receives anything. Only the runtime machine's
 * own events go out (its child actors' snapshots carry their input: the model handle and the prompt), and
 * its context and events are reduced to small facts. A context is plain data (no engine, model handle or
 * ticket: those are provided or kept in registries, see logic.ts), but a job in it carries its prompt, and an
 * event from a route carries its ticket and prompt: neither leaves the daemon.
 *
 * The transport is ours rather than @statelyai/inspect's WebSocket adapter: that one throws uncaught errors
 * when the inspector goes away and keeps reconnecting after stop(), which a daemon cannot afford.
 */

const MAX_PENDING = 200;
const RECONNECT_MS = 5_000;

class QuietWebSocketAdapter {
  private ws: WebSocket | null = null;
  private open = false;
  private stopped = false;
  private pending: string[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly url: string) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.on("open", () => {
      this.open = true;
      for (const text of this.pending.splice(0)) ws.send(text);
    });
    ws.on("error", () => {}); // "close" follows; the inspector being away is not the daemon's problem
    ws.on("close", () => {
      this.open = false;
      if (!this.stopped) this.timer = setTimeout(() => this.connect(), RECONNECT_MS).unref();
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.terminate();
    this.ws = null;
  }

  send(event: unknown): void {
    let text: string;
    try {
      text = JSON.stringify(event);
    } catch {
      return; // not serializable: skipped rather than crash
    }
    if (this.open && this.ws) this.ws.send(text);
    else {
      this.pending.push(text);
      if (this.pending.length > MAX_PENDING) this.pending.shift();
    }
  }
}

function sanitizeEvent<E extends { type: string }>(event: E): E {
  const e = event as Record<string, unknown>;
  const safe: Record<string, unknown> = { type: event.type };
  if (typeof e.path === "string") safe.path = e.path;
  for (const key of ["name", "model", "phase"]) if (typeof e[key] === "string") safe[key] = e[key];
  if (typeof e.all === "boolean") safe.all = e.all;
  if (typeof e.progress === "number") safe.progress = e.progress;
  if (e.error && typeof e.error === "object") safe.error = { code: (e.error as { code?: string }).code };
  return safe as E;
}

function sanitizeContext(context: unknown): Record<string, unknown> {
  if (typeof context === "object" && context !== null && "models" in context) {
    const c = context as Partial<SupervisorContext>;
    return {
      models: Object.values(c.models ?? {}).map((m) => ({ name: m.name, phase: m.phase, expires_at: m.expiresAt })),
      departing: c.departing?.length ?? 0,
      admitting: c.admission?.request.path ?? null,
    };
  }
  // Engine and monitor actors have no context at all.
  if (typeof context !== "object" || context === null || !("queue" in context)) return {};
  const c = context as Partial<RuntimeContext>;
  return {
    model: c.model?.name ?? null,
    loading: c.load?.plan.path ?? null,
    queue_length: c.queue?.length ?? 0,
    running: c.running?.length ?? 0,
    last_generation: c.lastGeneration ?? null,
    last_error: c.lastError ?? null,
  };
}

export async function statelyInspector(url: string): Promise<{ observe(e: InspectionEvent): void; stop(): void }> {
  const { createInspector } = await import("@statelyai/inspect");
  const adapter = new QuietWebSocketAdapter(url);
  const inspector = createInspector(adapter, { sanitizeEvent, sanitizeContext: (c) => sanitizeContext(c) });
  inspector.start();
  const observer = inspector.inspect;
  return {
    observe: (e) => {
      // The supervisor (the system's root) and each model's runtime; engine actors carry prompts and handles.
      const machineId = (e.actorRef as { logic?: { id?: string } }).logic?.id;
      if (e.actorRef.sessionId === e.rootId || machineId === "runtime") observer.next?.(e);
    },
    stop: () => inspector.stop(),
  };
}
