import { Reply, RuntimeOracle, finishOldest, type EngineGeneration, type ReportedPhase } from "./runtimeOracle.ts";

/**
 * The reference model of the supervisor: several models by name, each with its own runtime reference model,
 * loads admitted one at a time, placement (--max-models, the memory budget, least recently used idle models
 * evicted first, working models never), keep-alive on a simulated clock, the default model, and STOP/UNLOAD
 * for every model. Plain TypeScript written from the specification, not from the machine; the model-based
 * test compares it with the real supervisor step by step.
 */

export interface SupervisorLimits {
  maxModels: number;
  /** --max-memory in bytes (Infinity: no budget in the way). */
  budgetBytes: number;
  /** 0: unload when idle; -1: never. */
  keepAliveMs: number;
  slots: number;
  maxQueue: number;
  /** What each model is planned to take. */
  bytesOf: (name: string) => number;
  /** Memory the machine has free for models, loaded ones not counted. */
  freeBytes: number;
}

interface Entry {
  name: string;
  runtime: RuntimeOracle;
  /** "new" until its runtime reports its load under way. */
  view: ReportedPhase | "new";
  bytes: number;
  useOrder: number;
  loadOrder: number;
  /** When its keep-alive timer fires, and the order it was armed in (ties fire in that order). */
  timer: { at: number; seq: number } | null;
}

interface LoadRequest {
  name: string;
  path: string;
  reply: Reply;
}

type SupervisorPhase = "serving.ready" | "serving.admitting" | "serving.evicting" | "stopping" | "stopped";

export class SupervisorOracle {
  phase: SupervisorPhase = "serving.ready";
  readonly models = new Map<string, Entry>();
  departing: Entry[] = [];
  private admission: LoadRequest | null = null;
  private waiting: LoadRequest[] = [];
  /** Generations waiting for the admission of the model they named. */
  private parked: Array<{ id: string; model: string; reply: Reply }> = [];
  lastError: string | null = null;
  /** Generations the engine holds, oldest first, over all models. */
  readonly engine: EngineGeneration[] = [];
  /** Runtimes whose engine load is under way, oldest first (as the engine's own list). */
  private loads: RuntimeOracle[] = [];
  /** Engines lost per model file, and the files not loaded again. */
  private crashes = new Map<string, { losses: number; quarantined: boolean }>();
  /** Runtimes whose model is being freed, in the order the engine was asked. */
  private disposals: RuntimeOracle[] = [];
  private uses = 0;
  private timerSeq = 0;
  now = 0;

  constructor(readonly limits: SupervisorLimits) {}

  get defaultModel(): Entry | null {
    let best: Entry | null = null;
    for (const m of this.models.values()) if (!best || m.loadOrder > best.loadOrder) best = m;
    return best;
  }

  // ── Requests ──────────────────────────────────────────────────────────────────────────────────────
  load(name: string, reply: Reply): void {
    if (this.stoppingOrStopped(reply)) return;
    this.waiting.push({ name, path: `/models/${name}.gguf`, reply });
    this.nextAdmission();
  }

  /** A generation; `fromCatalogue`: the named model is not loaded but its file is known, so it is loaded first. */
  run(id: string, model: string | undefined, reply: Reply, fromCatalogue = false): void {
    if (this.stoppingOrStopped(reply)) return;
    if (model !== undefined && !this.models.has(model) && fromCatalogue) {
      const pending = this.admission?.name === model || this.waiting.some((l) => l.name === model);
      this.parked.push({ id, model, reply });
      if (!pending) this.load(model, new Reply());
      return;
    }
    if (model !== undefined && !this.models.has(model)) return reply.settle("err:UNKNOWN_MODEL");
    const target = model !== undefined ? this.models.get(model)! : this.defaultModel;
    if (!target) return reply.settle("err:NO_MODEL");
    target.useOrder = ++this.uses;
    target.timer = null;
    this.touch(target.runtime, () => target.runtime.run(id, reply));
  }

  stop(model: string | undefined, all: boolean, reply: Reply, job?: string): void {
    if (this.stoppingOrStopped(reply)) return;
    if (model !== undefined && !this.models.has(model)) return reply.settle("err:UNKNOWN_MODEL");
    const parked = job !== undefined ? this.parked.find((p) => p.id === job) : undefined;
    if (parked) {
      this.parked = this.parked.filter((p) => p !== parked);
      parked.reply.settle("err:QUEUE_CLEARED");
      return reply.settle("ok:stopped=false,dropped=1");
    }
    if (model !== undefined) {
      const m = this.models.get(model)!;
      return this.touch(m.runtime, () => m.runtime.stop(all, reply, job));
    }
    if (this.models.size === 0) return reply.settle("ok:stopped=false,dropped=0");
    const names = [...this.models.keys()];
    const gathered = this.gather(names.length, reply, (answers) => {
      const parsed = answers.map((a) => /stopped=(\w+),dropped=(\d+)/.exec(a)!);
      return `ok:stopped=${parsed.some((p) => p[1] === "true")},dropped=${parsed.reduce((n, p) => n + Number(p[2]), 0)}`;
    });
    for (const name of names) this.stop(name, all, gathered(), job);
  }

  unload(model: string | undefined, reply: Reply): void {
    if (this.stoppingOrStopped(reply)) return;
    if (model !== undefined && !this.models.has(model)) return reply.settle("err:UNKNOWN_MODEL");
    if (model !== undefined) {
      const m = this.models.get(model)!;
      if (m.view === "idle") return this.retire(m, reply);
      return this.touch(m.runtime, () => m.runtime.unload(reply));
    }
    if (this.models.size === 0) return reply.settle("ok:unloaded=false");
    const names = [...this.models.keys()];
    const gathered = this.gather(names.length, reply, (answers) => `ok:unloaded=${answers.some((a) => a === "ok:unloaded=true")}`);
    for (const name of names) this.unload(name, gathered());
  }

  cancel(id: string): void {
    if (this.phase === "stopping" || this.phase === "stopped") return;
    const parked = this.parked.find((p) => p.id === id);
    if (parked) {
      this.parked = this.parked.filter((p) => p !== parked);
      return parked.reply.settle("err:CLIENT_CLOSED");
    }
    for (const m of [...this.models.values()]) this.touch(m.runtime, () => m.runtime.cancel(id));
  }

  shutdown(): void {
    if (this.phase === "stopping" || this.phase === "stopped") return;
    this.admission?.reply.settle("err:SHUTTING_DOWN");
    for (const l of this.waiting) l.reply.settle("err:SHUTTING_DOWN");
    for (const p of this.parked.splice(0)) p.reply.settle("err:SHUTTING_DOWN");
    this.admission = null;
    this.waiting = [];
    this.phase = "stopping";
    for (const m of [...this.models.values(), ...this.departing]) {
      m.timer = null;
      this.touch(m.runtime, () => m.runtime.shutdown());
    }
    this.checkStopped();
  }

  // ── The engine and the clock ──────────────────────────────────────────────────────────────────────
  admitted(ok: boolean): void {
    if (this.phase !== "serving.admitting" || !this.admission) return;
    if (!ok) {
      this.admission.reply.settle("err:MODEL_INVALID");
      this.refuseParked(this.admission.name, "MODEL_INVALID");
      this.lastError = "MODEL_INVALID";
      this.admission = null;
      this.phase = "serving.ready";
      return this.nextAdmission();
    }
    this.place(this.admission);
  }

  /** The oldest engine load ends: loaded, refused by llama.cpp, or its engine process crashed. */
  loadDone(outcome: "ok" | "refused" | "crashed"): void {
    const runtime = this.loads.shift();
    if (!runtime) return;
    this.touch(runtime, () => (outcome === "ok" ? runtime.loadDone() : runtime.loadFailed(outcome === "refused" ? "MODEL_INVALID" : "ENGINE_CRASHED")));
  }

  finishGeneration(failed?: string): void {
    const g = this.engine[0];
    if (!g) return;
    this.touch(g.owner, () => finishOldest(this.engine, { failed }));
  }

  loseEngine(name: string): void {
    const m = this.models.get(name);
    if (m) this.touch(m.runtime, () => m.runtime.engineLost());
  }

  disposed(): void {
    for (const runtime of this.disposals.splice(0)) this.touch(runtime, () => runtime.disposed());
  }

  /** Advances the clock: keep-alive timers that are due fire in order. */
  tick(ms: number): void {
    this.now += ms;
    const due = [...this.models.values()].filter((m) => m.timer && m.timer.at <= this.now).sort((a, b) => a.timer!.at - b.timer!.at || a.timer!.seq - b.timer!.seq);
    for (const m of due) {
      m.timer = null;
      if (this.models.get(m.name) === m && m.view === "idle") this.retire(m);
    }
  }

  // ── Inside ────────────────────────────────────────────────────────────────────────────────────────
  private stoppingOrStopped(reply: Reply): boolean {
    if (this.phase !== "stopping" && this.phase !== "stopped") return false;
    reply.settle("err:SHUTTING_DOWN");
    return true;
  }

  /** Answers `reply` once `parts` replies have been answered: with the first error, or `combine` of the answers. */
  private gather(parts: number, reply: Reply, combine: (answers: string[]) => string): () => Reply {
    const answers: string[] = [];
    return () =>
      new Reply((answer) => {
        answers.push(answer);
        if (answers.length < parts) return;
        reply.settle(answers.find((a) => a.startsWith("err:")) ?? combine(answers));
      });
  }

  private nextAdmission(): void {
    if (this.phase !== "serving.ready" || this.waiting.length === 0) return;
    this.admission = this.waiting.shift()!;
    this.phase = "serving.admitting";
  }

  private place(request: LoadRequest): void {
    const bytes = this.limits.bytesOf(request.name);
    const same = this.models.get(request.name);
    const refuse = (code: string) => {
      request.reply.settle(`err:${code}`);
      this.refuseParked(request.name, code);
      this.lastError = code;
      this.admission = null;
      this.phase = "serving.ready";
      this.nextAdmission();
    };
    const loading = (m: Entry) => m.view === "new" || m.view === "loading";
    // A file that crashed its engine while loading, or three times, is not loaded again.
    if (this.crashes.get(request.path)?.quarantined) return refuse("MODEL_INVALID");
    if (same && same.view !== "idle") return refuse(loading(same) ? "MODEL_LOADING" : "BUSY");
    const others = [...this.models.values()].filter((m) => m.name !== request.name);
    const candidates = others.filter((m) => m.view === "idle").sort((a, b) => a.useOrder - b.useOrder);
    const evict: Entry[] = [];
    let count = others.length;
    let used = others.reduce((n, m) => n + m.bytes, 0);
    const held = [...this.models.values(), ...this.departing].reduce((n, m) => n + m.bytes, 0);
    const machine = this.limits.freeBytes + held;
    while ((count + 1 > this.limits.maxModels || used + bytes > Math.min(this.limits.budgetBytes, machine)) && candidates.length > 0) {
      const victim = candidates.shift()!;
      evict.push(victim);
      count--;
      used -= victim.bytes;
    }
    if (count + 1 > this.limits.maxModels) {
      const busy = others.filter((m) => m.view !== "idle");
      return refuse(busy.length > 0 && busy.every(loading) ? "MODEL_LOADING" : "BUSY");
    }
    if (used + bytes > machine || used + bytes > this.limits.budgetBytes) return refuse("INSUFFICIENT_MEMORY");
    for (const m of evict) this.retire(m);
    this.phase = "serving.evicting";
    this.startLoadWhenFree();
  }

  /** The admitted load starts once no model is departing any more. */
  private startLoadWhenFree(): void {
    if (this.phase !== "serving.evicting" || this.departing.length > 0 || !this.admission) return;
    const request = this.admission;
    this.admission = null;
    this.phase = "serving.ready";
    const existing = this.models.get(request.name);
    const order = ++this.uses;
    const entry: Entry = existing ?? { name: request.name, runtime: new RuntimeOracle({ slots: this.limits.slots, maxQueue: this.limits.maxQueue }, this.engine), view: "new", bytes: 0, useOrder: order, loadOrder: order, timer: null };
    entry.bytes = this.limits.bytesOf(request.name);
    entry.useOrder = order;
    entry.loadOrder = order;
    entry.timer = null;
    this.models.set(request.name, entry);
    this.lastError = null;
    this.touch(entry.runtime, () => entry.runtime.loadModel(request.path, request.reply));
    // Generations that asked for this model wait for it in its queue, in order.
    for (const p of this.parked.filter((p) => p.model === request.name)) this.touch(entry.runtime, () => entry.runtime.run(p.id, p.reply));
    this.parked = this.parked.filter((p) => p.model !== request.name);
    this.nextAdmission();
  }

  private refuseParked(name: string, code: string): void {
    // A daemon whose models are all busy or loading is full: its waiting requests get 503, retried elsewhere.
    const parkedCode = code === "MODEL_LOADING" || code === "BUSY" ? "QUEUE_FULL" : code;
    for (const p of this.parked.filter((p) => p.model === name)) p.reply.settle(`err:${parkedCode}`);
    this.parked = this.parked.filter((p) => p.model !== name);
  }

  /** A model leaves the set: its runtime frees it, and it is departing until then. */
  private retire(m: Entry, reply = new Reply()): void {
    this.models.delete(m.name);
    m.timer = null;
    this.departing.push(m);
    this.touch(m.runtime, () => m.runtime.unload(reply));
  }

  /** Runs `change` on a runtime and handles what it then reports, as the supervisor does on MODEL.PHASE. */
  private touch(runtime: RuntimeOracle, change: () => void): void {
    const before = runtime.reported;
    const phaseBefore = runtime.phase;
    change();
    const after = runtime.reported;
    // The engine's own lists: a load starts on entering `loading`, a disposal on entering a state that frees.
    if (runtime.phase === "loading" && phaseBefore !== "loading") this.loads.push(runtime);
    if (["unloading", "replacing", "stopping"].includes(runtime.phase) && runtime.holdsModel && !this.disposals.includes(runtime)) this.disposals.push(runtime);
    if (after !== before) this.report(runtime, after);
  }

  private report(runtime: RuntimeOracle, phase: ReportedPhase): void {
    const departing = this.departing.find((m) => m.runtime === runtime);
    if (departing) {
      if (phase === "empty" || phase === "stopped") {
        this.departing = this.departing.filter((m) => m !== departing);
        this.startLoadWhenFree();
        this.checkStopped();
      }
      return;
    }
    const m = [...this.models.values()].find((e) => e.runtime === runtime);
    if (!m) return;
    if (this.phase === "stopping") {
      if (phase === "stopped") {
        this.models.delete(m.name);
        this.checkStopped();
      }
      return;
    }
    const previous = m.view;
    m.view = phase;
    m.timer = null;
    if (phase === "idle") {
      m.useOrder = ++this.uses;
      if (this.limits.keepAliveMs === 0) return this.retire(m);
      if (this.limits.keepAliveMs > 0) m.timer = { at: this.now + this.limits.keepAliveMs, seq: ++this.timerSeq };
    } else if (phase === "loading" && previous === "busy") {
      // Its engine was lost under requests and the runtime loads it again: the loss counts.
      this.lastError = runtime.lastError;
      const path = `/models/${m.name}.gguf`;
      const losses = (this.crashes.get(path)?.losses ?? 0) + 1;
      this.crashes.set(path, { losses, quarantined: losses >= 3 });
    } else if (phase === "empty") {
      this.models.delete(m.name);
      if (runtime.lastError) this.lastError = runtime.lastError;
      if (runtime.lastError === "ENGINE_CRASHED" || runtime.lastError === "ENGINE_TIMEOUT") {
        const path = `/models/${m.name}.gguf`;
        const losses = (this.crashes.get(path)?.losses ?? 0) + 1;
        this.crashes.set(path, { losses, quarantined: previous === "new" || previous === "loading" || losses >= 3 });
      }
    }
  }

  private checkStopped(): void {
    if (this.phase === "stopping" && this.models.size === 0 && this.departing.length === 0) this.phase = "stopped";
  }
}
