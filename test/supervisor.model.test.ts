import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createActor, fromPromise, type InspectionEvent } from "xstate";
import type { GenerateResult } from "../src/engine/types.ts";
import { place } from "../src/machines/placement.ts";
import { sendRequest } from "../src/machines/sendRequest.ts";
import { stateName } from "../src/machines/selectors.ts";
import { supervisorMachine, type SupervisorInput } from "../src/machines/supervisorMachine.ts";
import { createTicket, type Ticket } from "../src/machines/ticket.ts";
import { EMPTY_SAMPLE } from "../src/monitor/resourceSampler.ts";
import { FakeEngine, settle } from "./helpers/fakeEngine.ts";

/**
 * Model-based tests of the supervisor: every sequence of up to three operations from the alphabet below
 * (and long random ones) runs against a live supervisor whose runtimes drive a fake engine, and after every
 * step the supervisor must keep its promises: never more than --max-models models, never over the memory
 * budget, a model that is working is never evicted, and, once the system is drained and shut down, every
 * request has been answered. A coverage check makes sure the walks visit every state and event of the
 * supervisor's definition. The fake engine is allowed here because it lets each outcome happen on cue.
 */

const REQUEST = { prompt: "p", raw: true, sampling: {} };
const MODEL_BYTES = 1000;

type Op =
  | "loadA"
  | "loadB"
  | "loadC"
  | "loadBad"
  | "runA"
  | "runDefault"
  | "runUnknown"
  | "finish"
  | "fail"
  | "cancel"
  | "stopAll"
  | "stopA"
  | "unloadA"
  | "unloadAll"
  | "wait"
  | "shutdown";
const OPS: Op[] = ["loadA", "loadB", "loadC", "loadBad", "runA", "runDefault", "runUnknown", "finish", "fail", "cancel", "stopAll", "stopA", "unloadA", "unloadAll", "wait", "shutdown"];

function system(input: Partial<SupervisorInput>) {
  const engine = new FakeEngine();
  engine.modelBytes = MODEL_BYTES;
  const seen = { states: new Set<string>(), events: new Set<string>() };
  const inspect = (e: InspectionEvent) => {
    if (e.type !== "@xstate.snapshot" || e.actorRef !== actor) return;
    seen.events.add(e.event.type);
    const v = (e.snapshot as unknown as { value: unknown }).value;
    seen.states.add(typeof v === "string" ? v : Object.entries(v as Record<string, string>).map(([k, s]) => `${k}.${s}`)[0]);
  };
  const machine = supervisorMachine.provide({ actors: { monitor: fromPromise(async () => {}) as never } });
  const actor = createActor(machine, { inspect, input: { engine, sampleResources: async () => EMPTY_SAMPLE, ...input } });
  actor.start();
  const tickets: Array<Ticket<unknown>> = [];
  const ticket = <T,>() => {
    const t = createTicket<T>();
    tickets.push(t as Ticket<unknown>);
    return t;
  };
  let lastRun: Ticket<GenerateResult> | null = null;

  const models = () => Object.values(actor.getSnapshot().context.models);
  const working = () => models().filter((m) => ["generating", "cancelling"].includes(stateName(m.ref.getSnapshot()))).map((m) => m.name);

  async function load(name: string, valid = true) {
    sendRequest(actor, { type: "LOAD", path: `/models/${name}.gguf`, settings: {}, ticket: ticket() });
    await settle();
    if (!valid) return void engine.failValidation();
    engine.passValidation(); // the supervisor's admission
    await settle();
    engine.passValidation(); // the runtime's own check before it loads
    await settle();
    engine.finishLoad();
  }

  async function exec(op: Op): Promise<void> {
    const before = working();
    switch (op) {
      case "loadA":
        await load("a");
        break;
      case "loadB":
        await load("b");
        break;
      case "loadC":
        await load("c");
        break;
      case "loadBad":
        await load("bad", false);
        break;
      case "runA":
      case "runDefault":
      case "runUnknown":
        lastRun = ticket<GenerateResult>();
        sendRequest(actor, { type: "RUN", request: REQUEST, ticket: lastRun, ...(op === "runA" ? { model: "a" } : op === "runUnknown" ? { model: "zzz" } : {}) });
        break;
      case "finish":
        engine.finishGeneration();
        break;
      case "fail":
        engine.failGeneration("PROMPT_TOO_LONG");
        break;
      case "cancel":
        if (lastRun && actor.getSnapshot().status === "active") actor.send({ type: "CANCEL", job: lastRun });
        break;
      case "stopAll":
        sendRequest(actor, { type: "STOP", all: true, ticket: ticket() });
        break;
      case "stopA":
        sendRequest(actor, { type: "STOP", all: false, model: "a", ticket: ticket() });
        break;
      case "unloadA":
        sendRequest(actor, { type: "UNLOAD", model: "a", ticket: ticket() });
        break;
      case "unloadAll":
        sendRequest(actor, { type: "UNLOAD", ticket: ticket() });
        break;
      case "wait":
        await new Promise((r) => setTimeout(r, 15));
        break;
      case "shutdown":
        if (actor.getSnapshot().status === "active") actor.send({ type: "SHUTDOWN" });
        break;
    }
    await settle();
    const snapshot = actor.getSnapshot();
    if (snapshot.status !== "active") return;
    const maxModels = input.maxModels ?? 1;
    assert.ok(models().length <= maxModels, `${models().length} models loaded, at most ${maxModels} allowed`);
    if (input.maxMemory && "bytes" in input.maxMemory) {
      assert.ok(models().reduce((n, m) => n + m.bytes, 0) <= input.maxMemory.bytes, "within the memory budget");
    }
    if (op.startsWith("load")) {
      for (const name of before) assert.ok(models().some((m) => m.name === name), `${name} was working and must not be evicted by ${op}`);
    }
  }

  /** Ends every generation, shuts down, and checks that nothing was left unanswered. */
  async function drain(): Promise<void> {
    for (let i = 0; i < 20 && engine.generations.length > 0; i++) {
      engine.finishGeneration();
      await settle();
    }
    if (actor.getSnapshot().status === "active") actor.send({ type: "SHUTDOWN" });
    await settle();
    assert.equal(actor.getSnapshot().status, "done", `the supervisor stopped (state ${JSON.stringify(actor.getSnapshot().value)})`);
    const open = tickets.filter((t) => !t.settled).length;
    assert.equal(open, 0, `${open} request(s) left without an answer`);
  }

  return { actor, engine, exec, drain, seen, models };
}

const CONFIGS: Array<{ label: string; input: Partial<SupervisorInput> }> = [
  { label: "one model (the seed's replace-on-load)", input: { maxModels: 1, keepAliveMs: -1 } },
  { label: "two models, 10 ms keep-alive", input: { maxModels: 2, keepAliveMs: 10 } },
  { label: "three models, memory for two, two slots each", input: { maxModels: 3, maxMemory: { bytes: 2 * MODEL_BYTES }, keepAliveMs: -1, parallel: 2 } },
];

function* sequences(depth: number): Generator<Op[]> {
  if (depth === 0) return yield [];
  for (const rest of sequences(depth - 1)) {
    yield rest;
    if (rest.length === depth - 1) for (const op of OPS) yield [...rest, op];
  }
}

describe("supervisor machine, model-based", () => {
  const states = new Set<string>();
  const events = new Set<string>();

  for (const { label, input } of CONFIGS) {
    it(`${label}: every sequence of up to 3 operations keeps the invariants`, async () => {
      const unique = new Map<string, Op[]>();
      for (const seq of sequences(3)) unique.set(seq.join(","), seq);
      for (const seq of unique.values()) {
        const sut = system(input);
        try {
          for (const op of seq) await sut.exec(op);
          await sut.drain();
        } catch (e) {
          throw new Error(`after [${seq.join(", ")}]: ${(e as Error).message}`);
        } finally {
          sut.actor.stop();
          for (const s of sut.seen.states) states.add(s);
          for (const e of sut.seen.events) events.add(e);
        }
      }
    });

    it(`${label}: long random sequences keep the invariants`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.constantFrom(...OPS), { minLength: 4, maxLength: 14 }), async (seq) => {
          const sut = system(input);
          try {
            for (const op of seq) await sut.exec(op);
            await sut.drain();
          } finally {
            sut.actor.stop();
          }
        }),
        { numRuns: 40, seed: 7 },
      );
    });
  }

  it("visited every state and every event of the supervisor's definition", () => {
    assert.deepEqual([...states].sort(), ["serving.admitting", "serving.ready", "stopped", "stopping"]);
    for (const e of ["LOAD", "RUN", "STOP", "UNLOAD", "CANCEL", "SHUTDOWN", "MODEL.PHASE", "KEEPALIVE.EXPIRED", "xstate.done.actor.admission", "xstate.error.actor.admission"]) {
      assert.ok(events.has(e), `event ${e} was exercised`);
    }
  });
});

describe("supervisor machine, specific behaviour", () => {
  it("evicts the least recently used idle model, and keeps the one just used", async () => {
    const sut = system({ maxModels: 2, keepAliveMs: -1 });
    await sut.exec("loadA");
    await sut.exec("loadB");
    await sut.exec("runA");
    await sut.exec("finish");
    await sut.exec("loadC");
    assert.deepEqual(sut.models().map((m) => m.name).sort(), ["a", "c"]);
    await sut.drain();
  });

  it("answers a request sent after shutdown at once, instead of leaving it hanging", async () => {
    const sut = system({});
    await sut.exec("shutdown");
    assert.equal(sut.actor.getSnapshot().status, "done");
    await assert.rejects(sendRequest(sut.actor, { type: "RUN", request: REQUEST, ticket: createTicket() }), /shutting down/);
  });

  it("places by count and budget, least recently used first, and never evicts a busy model", () => {
    const m = (name: string, phase: "idle" | "busy" | "loading", lastUsed: number, bytes = 10) => ({ name, phase, lastUsed, bytes });
    assert.deepEqual(place([m("a", "idle", 2), m("b", "idle", 1)], { name: "c", bytes: 10 }, { maxModels: 2, budgetBytes: 100 }), { ok: true, evict: ["b"] });
    assert.deepEqual(place([m("a", "busy", 1), m("b", "idle", 2)], { name: "c", bytes: 10 }, { maxModels: 2, budgetBytes: 100 }), { ok: true, evict: ["b"] });
    assert.deepEqual(place([m("a", "busy", 1), m("b", "loading", 2)], { name: "c", bytes: 10 }, { maxModels: 2, budgetBytes: 100 }), { ok: false, reason: "busy", busy: ["a", "b"] });
    assert.deepEqual(place([m("a", "idle", 1, 60), m("b", "idle", 2, 30)], { name: "c", bytes: 50 }, { maxModels: 5, budgetBytes: 100 }), { ok: true, evict: ["a"] });
    assert.deepEqual(place([m("a", "busy", 1, 60)], { name: "c", bytes: 50 }, { maxModels: 5, budgetBytes: 100 }), { ok: false, reason: "memory", neededBytes: 50, availableBytes: 40 });
    assert.deepEqual(place([m("a", "idle", 1, 60)], { name: "a", bytes: 90 }, { maxModels: 1, budgetBytes: 100 }), { ok: true, evict: [] }, "a reload replaces itself");
  });
});
