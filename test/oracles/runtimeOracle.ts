/**
 * The reference model of one model's runtime: what must happen, written in plain TypeScript without
 * XState, from the specification (README, docs/api.md), not from the machine. The model-based tests run
 * it side by side with the real runtime machine over the same operations and compare, after every step,
 * the state users see, the jobs running and waiting, whether the model is held, and how every request was
 * answered so far. Where the two disagree, one of them is wrong.
 */

export type Phase = "empty" | "loading" | "replacing" | "idle" | "generating" | "cancelling" | "unloading" | "stopping" | "stopped";

/** How a request was answered: "pending", "ok:<what>" or "err:<CODE>". */
export type Answer = string;

/** A request's answer, settled once: the first answer wins, as a ticket's does. */
export class Reply {
  answer: Answer = "pending";
  constructor(private readonly onSettle?: (answer: Answer) => void) {}
  settle(answer: Answer): void {
    if (this.answer !== "pending") return;
    this.answer = answer;
    this.onSettle?.(answer);
  }
  get settled(): boolean {
    return this.answer !== "pending";
  }
}

interface Job {
  id: string;
  reply: Reply;
  /**
   * A generation (stopped ones are answered at once), another job (answered when the engine ends it), or a
   * token lookup: it needs no slot, so it never waits for one.
   */
  kind: "generate" | "embed" | "tokenize";
  /** It was aborted (STOP, CANCEL); a stopped generation's requester has been answered. */
  aborted: boolean;
}

/** A generation as the engine sees it: the job it serves, or null once its job has been dropped. */
export interface EngineGeneration {
  path: string;
  job: Job | null;
  owner: RuntimeOracle;
}

/** Reloads in a row after a lost engine (no job ended well between them) before the model stays down. */
const RELOADS_AFTER_LOSS = 2;

export interface RuntimeLimits {
  slots: number;
  maxQueue: number;
}

/** What the machine calls phases the supervisor is told about. */
export type ReportedPhase = "empty" | "loading" | "idle" | "busy" | "unloading" | "stopping" | "stopped";

export class RuntimeOracle {
  phase: Phase = "empty";
  /** The model's memory is held (from its load until it has been freed). */
  holdsModel = false;
  path: string | null = null;
  private load: { path: string; reply: Reply } | null = null;
  running: Job[] = [];
  queue: Job[] = [];
  private stops: Array<{ reply: Reply; dropped: number }> = [];
  private unloads: Reply[] = [];
  /** Why the model last failed; cleared by a successful load. */
  lastError: string | null = null;
  /** Reloads after a lost engine since a job last ended well. */
  private reloads = 0;

  constructor(
    private readonly limits: RuntimeLimits,
    /** Generations as the engine holds them, oldest first, shared by every model of one engine. */
    readonly engine: EngineGeneration[] = [],
  ) {}

  get reported(): ReportedPhase {
    if (this.phase === "generating" || this.phase === "cancelling") return "busy";
    // Freeing the old model before a new one of the same name loads is, to the supervisor, loading.
    return this.phase === "replacing" ? "loading" : this.phase;
  }

  // ── Requests ──────────────────────────────────────────────────────────────────────────────────────
  loadModel(path: string, reply: Reply): void {
    switch (this.phase) {
      case "empty":
        this.load = { path, reply };
        this.reloads = 0;
        this.phase = "loading";
        return;
      case "idle":
        // Replacing: the old model is freed first.
        this.load = { path, reply };
        this.reloads = 0;
        this.phase = "replacing";
        return;
      case "loading":
      case "replacing":
        return reply.settle("err:MODEL_LOADING");
      case "generating":
      case "cancelling":
        return reply.settle("err:BUSY");
      case "unloading":
        return reply.settle("err:MODEL_UNLOADING");
      default:
        return reply.settle("err:SHUTTING_DOWN");
    }
  }

  run(id: string, reply: Reply, kind: Job["kind"] = "generate"): void {
    switch (this.phase) {
      case "empty":
        return reply.settle("err:NO_MODEL");
      case "loading":
      case "replacing":
        // It waits for the model, in the queue: up to a slot each when it is loaded, and --max-queue more.
        if (this.queue.length < this.limits.slots + this.limits.maxQueue) return void this.queue.push({ id, reply, kind, aborted: false });
        return reply.settle("err:QUEUE_FULL");
      case "unloading":
        return reply.settle("err:MODEL_UNLOADING");
      case "stopping":
      case "stopped":
        return reply.settle("err:SHUTTING_DOWN");
      case "idle":
        this.phase = "generating";
        return this.start({ id, reply, kind, aborted: false });
      case "generating":
        // Tokens start at once; a free slot starts any other job, whatever the queue's size.
        if (kind === "tokenize" || this.slotsTaken() < this.limits.slots) return this.start({ id, reply, kind, aborted: false });
        if (this.queue.length < this.limits.maxQueue) return void this.queue.push({ id, reply, kind, aborted: false });
        return reply.settle("err:QUEUE_FULL");
      case "cancelling":
        // While stopping, new requests wait for the stopped ones to end.
        if (this.queue.length < this.limits.maxQueue) return void this.queue.push({ id, reply, kind, aborted: false });
        return reply.settle("err:QUEUE_FULL");
    }
  }

  /** STOP: every running generation (`all`: and the waiting ones), or only the job `job` names. */
  stop(all: boolean, reply: Reply, job?: string): void {
    if (this.phase === "stopped") return reply.settle("err:SHUTTING_DOWN");
    if (job !== undefined) return this.stopOne(job, reply);
    if (this.phase === "loading" || this.phase === "replacing") {
      // Nothing runs yet; with `all`, the requests waiting for the model are dropped.
      const dropped = all ? this.queue.length : 0;
      if (all) for (const job of this.queue.splice(0)) job.reply.settle("err:QUEUE_CLEARED");
      return reply.settle(`ok:stopped=false,dropped=${dropped}`);
    }
    if (this.phase !== "generating" && this.phase !== "cancelling") return reply.settle("ok:stopped=false,dropped=0");
    let dropped = 0;
    if (all) {
      dropped = this.queue.length;
      for (const job of this.queue.splice(0)) job.reply.settle("err:QUEUE_CLEARED");
    }
    this.stops.push({ reply, dropped });
    if (this.phase === "generating") {
      for (const job of this.running) this.abort(job);
      this.phase = "cancelling";
    }
  }

  /** STOP {"id"}: a running job is stopped (answered at once), a waiting one dropped; anything else is nothing to stop. */
  private stopOne(id: string, reply: Reply): void {
    const holdsJobs = ["generating", "cancelling", "loading", "replacing"].includes(this.phase);
    const running = holdsJobs ? this.running.find((j) => j.id === id) : undefined;
    if (running) {
      this.abort(running);
      return reply.settle("ok:stopped=true,dropped=0");
    }
    const queued = holdsJobs ? this.queue.findIndex((j) => j.id === id) : -1;
    if (queued >= 0) {
      this.queue.splice(queued, 1)[0].reply.settle("err:QUEUE_CLEARED");
      return reply.settle("ok:stopped=false,dropped=1");
    }
    reply.settle("ok:stopped=false,dropped=0");
  }

  unload(reply: Reply): void {
    switch (this.phase) {
      case "empty":
        return reply.settle("ok:unloaded=false");
      case "loading":
      case "replacing":
        return reply.settle("err:MODEL_LOADING");
      case "generating":
      case "cancelling":
        return reply.settle("err:BUSY");
      case "idle":
        this.unloads.push(reply);
        this.phase = "unloading";
        return;
      case "unloading":
        // Freeing it already: answered when it is free.
        return void this.unloads.push(reply);
      default:
        return reply.settle("err:SHUTTING_DOWN");
    }
  }

  /** The client of job `id` went away. */
  cancel(id: string): void {
    if (this.phase !== "generating" && this.phase !== "cancelling" && this.phase !== "loading" && this.phase !== "replacing") return;
    const running = this.running.find((j) => j.id === id);
    if (running) return this.abort(running);
    const queued = this.queue.findIndex((j) => j.id === id);
    if (queued >= 0) this.queue.splice(queued, 1)[0].reply.settle("err:CLIENT_CLOSED");
  }

  shutdown(): void {
    if (this.phase === "stopping" || this.phase === "stopped") return;
    this.load?.reply.settle("err:SHUTTING_DOWN");
    this.load = null;
    for (const job of [...this.running, ...this.queue]) job.reply.settle("err:SHUTTING_DOWN");
    this.orphan(this.running);
    this.running = [];
    this.queue = [];
    this.answerStops();
    for (const reply of this.unloads.splice(0)) reply.settle("ok:unloaded=true");
    // With no model to free, shutting down is over at once.
    this.phase = this.holdsModel ? "stopping" : "stopped";
  }

  // ── The engine's outcomes ─────────────────────────────────────────────────────────────────────────
  loadDone(): void {
    if (this.phase !== "loading" || !this.load) return;
    this.holdsModel = true;
    this.path = this.load.path;
    this.load.reply.settle("ok:loaded");
    this.load = null;
    this.lastError = null;
    // Requests that waited for the model start at once.
    this.phase = this.queue.length > 0 ? "generating" : "idle";
    this.fill();
  }

  /** The load failed: llama.cpp refused the file (MODEL_INVALID), or its engine process crashed (ENGINE_CRASHED). */
  loadFailed(code = "MODEL_INVALID"): void {
    if (this.phase !== "loading" || !this.load) return;
    this.load.reply.settle(`err:${code}`);
    for (const job of this.queue.splice(0)) job.reply.settle(`err:${code}`);
    this.load = null;
    this.lastError = code;
    this.phase = "empty";
  }

  /** The engine has ended `job` normally (an embedding job it had been asked to stop ends with JOB_STOPPED). */
  generationDone(job: Job): void {
    if (!this.running.includes(job)) return;
    this.reloads = 0;
    if (job.kind === "tokenize") job.reply.settle("ok:tokens");
    else job.reply.settle(job.kind === "generate" ? "ok:stop" : job.aborted ? "err:JOB_STOPPED" : "ok:embedded");
    this.end(job);
  }

  /** The engine failed `job`'s generation: with ENGINE_FAILURE the model is lost, anything else only the job. */
  generationFailed(job: Job, code: string): void {
    if (!this.running.includes(job)) return;
    if (code !== "ENGINE_FAILURE") {
      // A stopped job other than a generation ends as stopped, whatever else went wrong.
      job.reply.settle(job.kind !== "generate" && job.aborted ? "err:JOB_STOPPED" : `err:${code}`);
      return this.end(job);
    }
    for (const j of [...this.running, ...this.queue]) j.reply.settle("err:ENGINE_FAILURE");
    this.orphan(this.running);
    this.running = [];
    this.queue = [];
    this.answerStops();
    this.lastError = "ENGINE_FAILURE";
    this.phase = "unloading";
  }

  /** The engine behind the model ended by itself: its process crashed. */
  engineLost(): void {
    if (this.phase !== "idle" && this.phase !== "generating" && this.phase !== "cancelling") return;
    if (this.running.length > 0 && this.reloads < RELOADS_AFTER_LOSS) {
      // Lost under requests: they fail, the model is loaded again (by the runtime, no one's request), the
      // waiting ones are served once it is.
      for (const j of this.running) j.reply.settle("err:ENGINE_CRASHED");
      this.orphan(this.running);
      this.running = [];
      this.answerStops();
      this.lastError = "ENGINE_CRASHED";
      this.holdsModel = false;
      this.load = { path: this.path!, reply: new Reply() };
      this.path = null;
      this.reloads += 1;
      this.phase = "loading";
      return;
    }
    for (const j of [...this.running, ...this.queue]) j.reply.settle("err:ENGINE_CRASHED");
    this.orphan(this.running);
    this.running = [];
    this.queue = [];
    this.answerStops();
    this.lastError = "ENGINE_CRASHED";
    this.holdsModel = false;
    this.path = null;
    this.phase = "empty";
  }

  /** The model's memory has been freed. */
  disposed(): void {
    if (this.phase !== "unloading" && this.phase !== "replacing" && this.phase !== "stopping") return;
    this.holdsModel = false;
    const path = this.path;
    this.path = null;
    // The engine forgets the freed model's generations.
    for (let i = this.engine.length - 1; i >= 0; i--) if (this.engine[i].path === path) this.engine.splice(i, 1);
    if (this.phase === "stopping") return void (this.phase = "stopped");
    if (this.phase === "replacing") return void (this.phase = "loading");
    for (const reply of this.unloads.splice(0)) reply.settle("ok:unloaded=true");
    this.phase = "empty";
  }

  // ── Inside ────────────────────────────────────────────────────────────────────────────────────────
  private start(job: Job): void {
    this.running.push(job);
    this.engine.push({ path: this.path!, job, owner: this });
  }

  /** A stopped generation's requester is answered at once; its slot stays taken until the engine ends it. */
  private abort(job: Job): void {
    if (job.aborted) return;
    job.aborted = true;
    if (job.kind === "generate") job.reply.settle("ok:cancelled");
  }

  private end(job: Job): void {
    this.running = this.running.filter((j) => j !== job);
    if (this.phase === "cancelling") {
      if (this.running.length > 0) return;
      this.answerStops();
      this.phase = "generating";
    }
    this.fill();
    if (this.running.length === 0) this.phase = "idle";
  }

  /** Starts waiting jobs, oldest first: every token lookup, and others while slots are free. */
  private fill(): void {
    let free = this.limits.slots - this.slotsTaken();
    const starting = this.queue.filter((j) => j.kind === "tokenize" || free-- > 0);
    this.queue = this.queue.filter((j) => !starting.includes(j));
    for (const job of starting) this.start(job);
  }

  private slotsTaken(): number {
    return this.running.filter((j) => j.kind !== "tokenize").length;
  }

  private answerStops(): void {
    for (const { reply, dropped } of this.stops.splice(0)) reply.settle(`ok:stopped=true,dropped=${dropped}`);
  }

  /** Jobs dropped while their generation runs: the engine still holds those generations. */
  private orphan(jobs: Job[]): void {
    for (const g of this.engine) if (g.job && jobs.includes(g.job)) g.job = null;
  }

  /** A summary for comparing with the machine and for naming states in the exploration. */
  key(): string {
    return JSON.stringify([this.phase, this.holdsModel, this.running.map((j) => `${j.kind}:${j.aborted}`), this.queue.map((j) => j.kind), this.stops.length > 0, this.unloads.length > 0, this.load !== null]);
  }
}

/**
 * Ends the oldest generation the engine holds, as the fake engine does (nothing happens for a dropped job's),
 * and returns the runtime it belonged to.
 */
export function finishOldest(engine: EngineGeneration[], how: { failed?: string } = {}): RuntimeOracle | null {
  const g = engine.shift();
  if (!g?.job) return null;
  if (how.failed) g.owner.generationFailed(g.job, how.failed);
  else g.owner.generationDone(g.job);
  return g.owner;
}
