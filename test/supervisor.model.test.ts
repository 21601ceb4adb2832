import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createActor, createEmptyActor, fromCallback, SimulatedClock } from "xstate";
import type { GenerateResult } from "../src/domain/generation.ts";
import { place } from "../src/machines/supervisor/placement.ts";
import type { LoadResult, StopResult, UnloadResult } from "../src/machines/runtimeMachine.ts";
import { sendRequest } from "../src/machines/sendRequest.ts";
import { stateName } from "../src/machines/selectors.ts";
import { statusView } from "../src/server/statusView.ts";
import { ticketOf } from "../src/machines/heldTickets.ts";
import { createSupervisorLogic } from "../src/machines/logic.ts";
import { defaultModel, supervisorMachine, type SupervisorInput } from "../src/machines/supervisorMachine.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { EMPTY_SAMPLE } from "../src/monitor/resourceSampler.ts";
import { FakeEngine, fakePlan, settle } from "./helpers/fakeEngine.ts";
import { TransitionCoverage } from "./helpers/machineCoverage.ts";
import { pairedRequests } from "./oracles/pairedRequests.ts";
import { SupervisorOracle, type SupervisorLimits } from "./oracles/supervisorOracle.ts";

/**
 * Model-based tests of the supervisor against a reference model of its own (test/oracles/
 * supervisorOracle.ts, which runs one runtime reference model per model): every operation is applied to
 * both, and after every step the supervisor's state, the models loaded (in order, each with its runtime's
 * state, jobs running and waiting), the models still departing, the default model, the last error and the
 * answer of every request so far must agree. Keep-alive runs on XState's SimulatedClock, so no test waits
 * for real time. Walks: every sequence of up to two operations, every sequence of three from a smaller
 * alphabet, and long random ones, over four configurations; a coverage check proves that together they took
 * every transition of the supervisor's definition. The fake engine is allowed here because it lets each
 * engine outcome happen on cue.
 */

const MODEL_BYTES = 1000;
const KEEP_ALIVE_MS = 10;
const REQUEST = { prompt: "p", raw: true, sampling: {} };
const GENERATE = { kind: "generate" as const, request: REQUEST };

type Op =
  | "loadA"
  | "loadB"
  | "loadC"
  | "loadBig"
  | "loadHuge"
  | "admitOk"
  | "admitBad"
  | "loaded"
  | "loadFailed"
  | "loadCrashed"
  | "runA"
  | "runB"
  | "runDefault"
  | "runUnknown"
  | "runCatalogueC"
  | "finish"
  | "fail"
  | "engineFail"
  | "loseA"
  | "loseB"
  | "cancel"
  | "stopAll"
  | "stopA"
  | "stopJob"
  | "unloadA"
  | "unloadAll"
  | "disposed"
  | "tick"
  | "sample"
  | "shutdown";
const OPS: Op[] = ["loadA", "loadB", "loadC", "loadBig", "loadHuge", "sample", "admitOk", "admitBad", "loaded", "loadFailed", "loadCrashed", "runA", "runB", "runDefault", "runUnknown", "runCatalogueC", "finish", "fail", "engineFail", "loseA", "loseB", "cancel", "stopAll", "stopA", "stopJob", "unloadA", "unloadAll", "disposed", "tick", "shutdown"];
/** The operations that change most: the three-step walks use these. */
const CORE: Op[] = ["loadB", "admitOk", "loaded", "runA", "runCatalogueC", "runDefault", "finish", "engineFail", "stopAll", "stopJob", "unloadA", "disposed", "tick", "shutdown"];
/** Where the walks start: the rules differ most with nothing loaded, a model loading, idle, or working. */
const PREFIXES: Record<string, Op[]> = {
  "nothing loaded": [],
  "a loading": ["loadA", "admitOk"],
  "a idle": ["loadA", "admitOk", "loaded"],
  "a working": ["loadA", "admitOk", "loaded", "runA"],
};
/** Sizes of the models by name; "big" fits no budget beside another model, "huge" no machine. */
const BYTES: Record<string, number> = { big: 1500, huge: 2e12 };
const bytesOf = (name: string) => BYTES[name] ?? MODEL_BYTES;
const FREE_BYTES = 1e12;

const CONFIGS: Array<{ label: string; limits: SupervisorLimits; input: Partial<SupervisorInput> }> = [
  { label: "one model (the seed's replace-on-load)", limits: { maxModels: 1, budgetBytes: Infinity, keepAliveMs: -1, slots: 1, maxQueue: 1, bytesOf, freeBytes: FREE_BYTES }, input: { maxModels: 1, keepAliveMs: -1, maxQueue: 1, maxMemory: { fraction: 1 } } },
  {
    label: "two models, keep-alive 10 ms",
    limits: { maxModels: 2, budgetBytes: Infinity, keepAliveMs: KEEP_ALIVE_MS, slots: 1, maxQueue: 1, bytesOf, freeBytes: FREE_BYTES },
    input: { maxModels: 2, keepAliveMs: KEEP_ALIVE_MS, maxQueue: 1, maxMemory: { fraction: 1 } },
  },
  {
    label: "three models, memory for two, two slots each, no queue",
    limits: { maxModels: 3, budgetBytes: 2 * MODEL_BYTES, keepAliveMs: -1, slots: 2, maxQueue: 0, bytesOf, freeBytes: FREE_BYTES },
    input: { maxModels: 3, maxMemory: { bytes: 2 * MODEL_BYTES }, keepAliveMs: -1, parallel: 2, maxQueue: 0 },
  },
  {
    label: "two models, keep-alive 0 (unload when idle)",
    limits: { maxModels: 2, budgetBytes: Infinity, keepAliveMs: 0, slots: 1, maxQueue: 1, bytesOf, freeBytes: FREE_BYTES },
    input: { maxModels: 2, keepAliveMs: 0, maxQueue: 1, maxMemory: { fraction: 1 } },
  },
];


const noMonitor = fromCallback(() => {});
const machine = supervisorMachine.provide({ actors: { monitor: noMonitor as never } });
const coverage = new TransitionCoverage(machine);
/** The chart bound to one system's fake engine (coverage counts its transitions as the chart's). */
const logicFor = (engine: FakeEngine) => createSupervisorLogic(engine).provide({ actors: { monitor: noMonitor as never } });

function system({ limits, input }: (typeof CONFIGS)[number]) {
  const engine = new FakeEngine();
  engine.modelBytes = MODEL_BYTES;
  for (const [name, bytes] of Object.entries(BYTES)) engine.bytesByPath.set(`/models/${name}.gguf`, bytes);
  const clock = new SimulatedClock();
  const actor = createActor(logicFor(engine), { clock, inspect: coverage.inspect, input });
  actor.start();
  const oracle = new SupervisorOracle(limits);
  const requests = pairedRequests();
  let jobs = 0;
  let lastJob: string | null = null;

  const request = <T,>() => requests.request<T>();

  function run(model: string | undefined, fromCatalogue = false) {
    const { ticket, reply } = request<GenerateResult>();
    const id = `job-${++jobs}`;
    lastJob = id;
    // The answer is read from the ticket (its `reply`, recorded by pairedRequests), not from this promise.
    void sendRequest(actor, { type: "RUN", id, work: GENERATE, ticket, ...(model !== undefined && { model }), ...(fromCatalogue && { load: { path: `/models/${model}.gguf` } }) });
    oracle.run(id, model, reply, fromCatalogue);
  }

  async function exec(op: Op): Promise<void> {
    switch (op) {
      case "loadA":
      case "loadB":
      case "loadC":
      case "loadBig":
      case "loadHuge": {
        const name = op.slice(4).toLowerCase();
        const { ticket, reply } = request<LoadResult>();
        void sendRequest(actor, { type: "LOAD", path: `/models/${name}.gguf`, settings: {}, ticket });
        oracle.load(name, reply);
        break;
      }
      case "admitOk":
        engine.passValidation();
        oracle.admitted(true);
        break;
      case "admitBad":
        engine.failValidation();
        oracle.admitted(false);
        break;
      case "loaded":
        engine.finishLoad();
        oracle.loadDone("ok");
        break;
      case "loadFailed":
        engine.failLoad();
        oracle.loadDone("refused");
        break;
      case "loadCrashed":
        engine.failLoad("ENGINE_CRASHED");
        oracle.loadDone("crashed");
        break;
      case "runA":
        run("a");
        break;
      case "runB":
        run("b");
        break;
      case "runDefault":
        run(undefined);
        break;
      case "runUnknown":
        run("zzz");
        break;
      case "runCatalogueC":
        run("c", true);
        break;
      case "finish":
        engine.finishGeneration();
        oracle.finishGeneration();
        break;
      case "fail":
        engine.failGeneration("PROMPT_TOO_LONG");
        oracle.finishGeneration("PROMPT_TOO_LONG");
        break;
      case "engineFail":
        engine.failGeneration("ENGINE_FAILURE");
        oracle.finishGeneration("ENGINE_FAILURE");
        break;
      case "loseA":
      case "loseB": {
        const name = op.slice(4).toLowerCase();
        engine.loseEngine(`/models/${name}.gguf`);
        oracle.loseEngine(name);
        break;
      }
      case "cancel":
        if (lastJob) {
          if (actor.getSnapshot().status === "active") actor.send({ type: "CANCEL", job: lastJob });
          oracle.cancel(lastJob);
        }
        break;
      case "stopAll":
      case "stopA": {
        const { ticket, reply } = request<StopResult>();
        const model = op === "stopA" ? "a" : undefined;
        void sendRequest(actor, { type: "STOP", all: true, ticket, ...(model && { model }) });
        oracle.stop(model, true, reply);
        break;
      }
      case "stopJob": {
        // POST /stop {"id"} for the last request, wherever it is (or has been).
        const { ticket, reply } = request<StopResult>();
        const job = lastJob ?? "job-none";
        void sendRequest(actor, { type: "STOP", all: false, request: job, ticket });
        oracle.stop(undefined, false, reply, job);
        break;
      }
      case "unloadA":
      case "unloadAll": {
        const { ticket, reply } = request<UnloadResult>();
        const model = op === "unloadA" ? "a" : undefined;
        void sendRequest(actor, { type: "UNLOAD", ticket, ...(model && { model }) });
        oracle.unload(model, reply);
        break;
      }
      case "disposed":
        engine.finishDisposals();
        oracle.disposed();
        break;
      case "sample":
        if (actor.getSnapshot().status === "active") actor.send({ type: "MONITOR.SAMPLE", sample: { ...EMPTY_SAMPLE, cpu_usage: 1 } });
        break;
      case "tick":
        clock.increment(KEEP_ALIVE_MS);
        oracle.tick(KEEP_ALIVE_MS);
        break;
      case "shutdown":
        if (actor.getSnapshot().status === "active") actor.send({ type: "SHUTDOWN" });
        oracle.shutdown();
        break;
    }
    await settle();
  }

  function observed() {
    const s = actor.getSnapshot();
    const value = s.value;
    const state = typeof value === "string" ? value : Object.entries(value).map(([k, v]) => `${k}.${v}`)[0];
    return {
      state,
      models: Object.values(s.context.models).map((m) => {
        const r = m.ref.getSnapshot();
        return `${m.name}:${stateName(r)}:${r.context.running.length}+${r.context.queue.length}`;
      }),
      departing: s.context.departing.length,
      default: defaultModel(s.context)?.name ?? null,
      lastError: s.context.lastError?.code ?? null,
      answers: requests.live(),
    };
  }
  function predicted() {
    return {
      state: oracle.phase,
      models: [...oracle.models.values()].map((m) => `${m.name}:${m.runtime.phase}:${m.runtime.running.length}+${m.runtime.queue.length}`),
      departing: oracle.departing.length,
      default: oracle.defaultModel?.name ?? null,
      lastError: oracle.lastError,
      answers: requests.expected(),
    };
  }
  return { actor, engine, clock, oracle, exec, observed, predicted };
}

async function replay(config: (typeof CONFIGS)[number], ops: readonly Op[]): Promise<void> {
  const sut = system(config);
  try {
    for (const [i, op] of ops.entries()) {
      await sut.exec(op);
      assert.deepEqual(sut.observed(), sut.predicted(), `${config.label}, after [${ops.slice(0, i + 1).join(", ")}]`);
    }
  } finally {
    sut.actor.stop();
  }
}

describe("supervisor machine, model-based against a reference model", () => {
  for (const config of CONFIGS) {
    it(`${config.label}: every pair of operations from each start, and every three core ones from an idle model`, async () => {
      for (const prefix of Object.values(PREFIXES)) for (const a of OPS) for (const b of OPS) await replay(config, [...prefix, a, b]);
      for (const a of CORE) for (const b of CORE) for (const c of CORE) await replay(config, [...PREFIXES["a idle"], a, b, c]);
    });

    it(`${config.label}: long random sequences`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.constantFrom(...OPS), { minLength: 6, maxLength: 40 }), async (ops) => replay(config, ops)),
        { numRuns: 120, seed: 7 },
      );
    });
  }
});

describe("supervisor machine, specific behaviour", () => {
  const twoModels = CONFIGS[1];

  it("evicts the least recently used idle model, and keeps the one just used", async () => {
    const sut = system({ ...CONFIGS[2], input: { ...CONFIGS[2].input, maxModels: 2 }, limits: { ...CONFIGS[2].limits, maxModels: 2 } });
    for (const op of ["loadA", "admitOk", "loaded", "loadB", "admitOk", "loaded", "runA", "finish", "loadC", "admitOk"] as Op[]) await sut.exec(op);
    assert.deepEqual(Object.keys(sut.actor.getSnapshot().context.models), ["a"], "b is departing: the least recently used");
    assert.equal(sut.actor.getSnapshot().context.departing[0].name, "b");
    await sut.exec("disposed");
    assert.deepEqual(Object.keys(sut.actor.getSnapshot().context.models), ["a", "c"], "c loads once b's memory is free");
    sut.actor.stop();
  });

  it("keeps one keep-alive timer per model, cancelled when the model leaves idle", async () => {
    const sut = system({ ...twoModels, input: { ...twoModels.input, keepAliveMs: 5 * 60_000 } });
    for (const op of ["loadA", "admitOk", "loaded"] as Op[]) await sut.exec(op);
    const timers = () => (sut.clock as unknown as { timeouts: Map<unknown, unknown> }).timeouts.size;
    assert.equal(timers(), 1, "idle: its keep-alive runs");
    for (let i = 0; i < 20; i++) {
      await sut.exec("runA");
      assert.equal(timers(), 0, "working: no keep-alive timer");
      await sut.exec("finish");
    }
    assert.equal(timers(), 1, "after 20 requests, still one timer");
    sut.actor.stop();
  });

  it("an engine failure frees that model, records why and answers everyone; the other model serves on", async () => {
    const sut = system(twoModels);
    for (const op of ["loadA", "admitOk", "loaded", "loadB", "admitOk", "loaded", "runA", "runA", "runB", "engineFail"] as Op[]) await sut.exec(op);
    let s = sut.actor.getSnapshot();
    assert.deepEqual(sut.observed().answers.slice(2), ["err:ENGINE_FAILURE", "err:ENGINE_FAILURE", "pending"]);
    assert.equal(stateName(s.context.models.a.ref.getSnapshot()), "unloading");
    await sut.exec("disposed");
    s = sut.actor.getSnapshot();
    assert.deepEqual(Object.keys(s.context.models), ["b"]);
    assert.equal(s.context.lastError?.code, "ENGINE_FAILURE", "the failure stays visible in /status");
    await sut.exec("finish");
    assert.deepEqual(sut.observed().answers.at(-1), "ok:stop");
    sut.actor.stop();
  });

  it("/status says a model is loaded while another one loads (model_loaded is not the newest model's)", async () => {
    const sut = system(twoModels);
    for (const op of ["loadA", "admitOk", "loaded", "loadB", "admitOk"] as Op[]) await sut.exec(op);
    const status = statusView(sut.actor.getSnapshot(), Date.now(), 1);
    assert.equal(status.state, "loading", "the default model is the newest, b, still loading");
    assert.equal(status.model_loaded, true, "a is loaded");
    sut.actor.stop();
  });

  it("does not load again a file whose engine crashed while loading, or crashed three times", async () => {
    const sut = system(twoModels);
    for (const op of ["loadA", "admitOk", "loadCrashed", "loadA", "admitOk"] as Op[]) await sut.exec(op);
    const refusal = sut.actor.getSnapshot().context.lastError;
    assert.equal(refusal?.code, "MODEL_INVALID");
    assert.match(refusal.message, /is not loaded again: its engine was lost at .* \(fake load failure \(ENGINE_CRASHED\)\)\. The daemon does not retry a file that crashes its engine\. Replace the file/);
    for (const op of ["loadB", "admitOk", "loaded", "loseB", "loadB", "admitOk", "loaded", "loseB", "loadB", "admitOk"] as Op[]) await sut.exec(op);
    assert.deepEqual(Object.keys(sut.actor.getSnapshot().context.models), ["b"], "after two losses while generating, b loads again");
    for (const op of ["loaded", "loseB", "loadB", "admitOk"] as Op[]) await sut.exec(op);
    assert.match(sut.actor.getSnapshot().context.lastError!.message, /its engine was lost 3 times/);
    assert.deepEqual(Object.keys(sut.actor.getSnapshot().context.models), []);
    sut.actor.stop();
  });

  it("answers a request sent after shutdown at once, instead of leaving it hanging", async () => {
    const sut = system(twoModels);
    await sut.exec("shutdown");
    assert.equal(sut.actor.getSnapshot().status, "done");
    await assert.rejects(sendRequest(sut.actor, { type: "RUN", id: "late", work: GENERATE, ticket: createTicket() }), /shutting down/);
  });

  it("ignores the late report of a runtime it has already let go", async () => {
    const sut = system(twoModels);
    for (const op of ["loadA", "admitOk", "loaded"] as Op[]) await sut.exec(op);
    const before = sut.actor.getSnapshot().context;
    for (const phase of ["empty", "idle", "busy", "loading", "stopped"] as const) {
      sut.actor.send({ type: "MODEL.PHASE", name: "a", phase, ref: createEmptyActor(), error: { code: "ENGINE_CRASHED", message: "late", at: new Date(0).toISOString() } });
    }
    await settle();
    const after = sut.actor.getSnapshot().context;
    assert.deepEqual([after.models, after.departing, after.lastError, after.crashes], [before.models, before.departing, before.lastError, before.crashes]);
    assert.deepEqual(sut.observed(), sut.predicted());
    sut.actor.stop();
  });

  it("refuses a load whose placement it does not understand, instead of staying in `placing`", async () => {
    // Not reachable through the rules: a placement is always one of the reasons it has a branch for. The
    // fallback is there so that a new reason without a branch cannot leave the supervisor stuck.
    const sut = system(twoModels);
    await sut.exec("loadA");
    const admitting = sut.actor.getSnapshot();
    sut.actor.stop();
    const admission = { ...admitting.context.admission!, plan: fakePlan("/models/a.gguf"), placement: { ok: false, reason: "unheard-of" } as never };
    const placing = machine.resolveState({ value: { serving: "placing" }, context: { ...admitting.context, admission } });
    const ticket = ticketOf<LoadResult>(admission.request.ticket)!;
    const actor = createActor(logicFor(new FakeEngine()), { snapshot: placing, inspect: coverage.inspect, input: {} });
    actor.start();
    actor.send({ type: "MONITOR.SAMPLE", sample: EMPTY_SAMPLE });
    await settle();
    const s = actor.getSnapshot();
    assert.deepEqual(s.value, { serving: "ready" });
    assert.equal(s.context.admission, null);
    assert.equal(s.context.lastError?.code, "INTERNAL");
    await assert.rejects(ticket.promise, (e: { code: string; message: string }) => e.code === "INTERNAL" && /could not decide where \/models\/a\.gguf goes/.test(e.message));
    actor.stop();
  });

  it("places by count, budget and the machine's memory, least recently used first, and never evicts a busy model", () => {
    const m = (name: string, phase: "idle" | "busy" | "loading", lastUsed: number, bytes = 10) => ({ name, phase, lastUsed, bytes });
    const limits = (maxModels: number, budgetBytes: number, machineBytes = Infinity) => ({ maxModels, budgetBytes, machineBytes });
    assert.deepEqual(place([m("a", "idle", 2), m("b", "idle", 1)], { name: "c", bytes: 10 }, limits(2, 100)), { ok: true, evict: ["b"] });
    assert.deepEqual(place([m("a", "busy", 1), m("b", "idle", 2)], { name: "c", bytes: 10 }, limits(2, 100)), { ok: true, evict: ["b"] });
    assert.deepEqual(place([m("a", "busy", 1), m("b", "loading", 2)], { name: "c", bytes: 10 }, limits(2, 100)), { ok: false, reason: "busy", busy: ["a", "b"] });
    assert.deepEqual(place([m("a", "loading", 1)], { name: "c", bytes: 10 }, limits(1, 100)), { ok: false, reason: "loading", busy: ["a"] });
    assert.deepEqual(place([m("a", "idle", 1, 60), m("b", "idle", 2, 30)], { name: "c", bytes: 50 }, limits(5, 100)), { ok: true, evict: ["a"] });
    assert.deepEqual(place([m("a", "busy", 1, 60)], { name: "c", bytes: 50 }, limits(5, 100)), { ok: false, reason: "budget", neededBytes: 50, availableBytes: 40 });
    assert.deepEqual(place([m("a", "busy", 1, 60)], { name: "c", bytes: 50 }, limits(5, 1000, 100)), { ok: false, reason: "machine", neededBytes: 50, availableBytes: 40 });
    assert.deepEqual(place([m("a", "idle", 1, 60)], { name: "a", bytes: 90 }, limits(1, 100)), { ok: true, evict: [] }, "a reload replaces itself");
    assert.deepEqual(place([m("a", "busy", 1, 60)], { name: "a", bytes: 90 }, limits(1, 100)), { ok: false, reason: "busy", busy: ["a"] }, "a busy model is not replaced");
  });
});

describe("supervisor machine, coverage", () => {
  it("the walks and the tests above took every transition of the supervisor's definition", () => {
    assert.deepEqual(coverage.missing(), []);
  });
});
