import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { getAdjacencyMap, getShortestPaths } from "@xstate/graph";
import { createActor, fromCallback, fromPromise, type SnapshotFrom } from "xstate";
import { KekahydeError } from "../src/errors.ts";
import type { LoadedModel } from "../src/engine/types.ts";
import { runtimeMachine, type RuntimeEvent } from "../src/machines/runtimeMachine.ts";
import { stateName } from "../src/machines/selectors.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { FakeEngine, settle } from "./helpers/fakeEngine.ts";

/**
 * Model-based tests: @xstate/graph walks the runtime machine's own definition, and every transition it finds
 * (every state × every event) is replayed against a running machine whose engine actors drive a fake engine.
 * The fake engine is allowed here, and only here, because it lets each engine outcome happen on cue.
 */

type Snapshot = SnapshotFrom<typeof runtimeMachine>;

const fakeModel = { info: {}, generate: async () => ({}), dispose: async () => {} } as unknown as LoadedModel;
const noop = fromCallback(() => {}) as never;

const RESULT = { text: "", finishReason: "stop" as const, promptTokens: 1, completionTokens: 0, durationMs: 1, firstTokenMs: null };
const REQUEST = { prompt: "p", raw: true, sampling: {} };
/**
 * Every RUN of the traversal shares this ticket, so CANCEL names "the oldest running job, else the first
 * queued", and an engine report names the oldest running job, as the fake engine ends them oldest first.
 */
const JOB = createTicket<typeof RESULT>();
const MAX_QUEUE = 2;
/** Two slots, so that the traversal covers jobs running side by side and the queue behind them. */
const SLOTS = 2;

/** The abstract events; each is either a request from a route or an outcome of an engine actor. */
const EVENTS: RuntimeEvent[] = [
  { type: "LOAD", path: "/models/m.gguf", settings: {}, ticket: createTicket() },
  { type: "RUN", request: REQUEST, ticket: JOB },
  { type: "STOP", all: false, ticket: createTicket() },
  { type: "STOP", all: true, ticket: createTicket() },
  { type: "UNLOAD", ticket: createTicket() },
  { type: "CANCEL", job: JOB },
  { type: "SHUTDOWN" },
  { type: "GENERATION.PROGRESS", job: JOB, progress: { completionTokens: 3, firstTokenMs: 5 } },
  { type: "LOAD.PROGRESS", progress: 0.5 },
  { type: "LOAD.PREVIOUS_DISPOSED" },
  { type: "LOAD.DONE", model: fakeModel },
  { type: "LOAD.FAILED", error: new KekahydeError("MODEL_INVALID", "x") },
  { type: "GENERATION.STOPPED", job: JOB, result: { ...RESULT, finishReason: "cancelled" as const } },
  { type: "GENERATION.DONE", job: JOB, result: RESULT },
  { type: "GENERATION.FAILED", job: JOB, error: new KekahydeError("PROMPT_TOO_LONG", "x") },
  { type: "GENERATION.FAILED", job: JOB, error: new KekahydeError("ENGINE_FAILURE", "x") },
  { type: "xstate.done.actor.disposer" } as unknown as RuntimeEvent,
];

const serializeEvent = (e: RuntimeEvent) => ("error" in e ? `${e.type}:${e.error.code}` : e.type === "STOP" ? `STOP:${e.all ? "all" : "one"}` : e.type);

/** What the tests compare: the state, whether a model is held, the jobs running and waiting, whether a stop waits. */
const serializeState = (s: Snapshot) =>
  JSON.stringify({
    value: s.value,
    model: s.context.model !== null,
    running: s.context.running.length,
    queue: s.context.queue.length,
    stopsWaiting: s.context.stopTickets.length > 0,
    done: s.status === "done",
  });

/** Traversal runs the definition with inert actors: only the transitions matter there. */
const definition = runtimeMachine.provide({
  actors: { loadModel: noop, generate: noop, disposeModel: fromPromise(async () => {}) as never },
});

const traversal = {
  input: { engine: new FakeEngine(), maxQueue: MAX_QUEUE, slots: SLOTS },
  events: EVENTS,
  serializeState: serializeState as never,
  serializeEvent: serializeEvent as never,
  // A stopped actor takes no more events; what happens to requests then is tested below.
  stopWhen: (s: Snapshot) => s.status === "done",
};

/** A live machine with the real engine actors over a fake engine, and a way to make each event happen. */
function system() {
  const engine = new FakeEngine();
  let finishDisposal!: () => void;
  const disposal = new Promise<void>((r) => (finishDisposal = r));
  const machine = runtimeMachine.provide({
    actors: {
      // Shutdown's dispose waits for the test, so that `stopping` can be observed.
      disposeModel: fromPromise(async () => disposal) as never,
    },
  });
  const actor = createActor(machine, { input: { engine, maxQueue: MAX_QUEUE, slots: SLOTS } });
  actor.start();
  const tickets: Array<ReturnType<typeof createTicket<unknown>>> = [];
  const ticket = <T,>() => {
    const t = createTicket<T>();
    tickets.push(t as never);
    return t;
  };

  async function exec(event: RuntimeEvent): Promise<void> {
    switch (event.type) {
      case "LOAD":
        actor.send({ type: "LOAD", path: event.path, settings: {}, ticket: ticket() });
        break;
      case "RUN":
        actor.send({ type: "RUN", request: event.request, ticket: ticket() });
        break;
      case "STOP":
        actor.send({ type: "STOP", all: event.all, ticket: ticket() });
        break;
      case "UNLOAD":
        actor.send({ type: "UNLOAD", ticket: ticket() });
        break;
      case "CANCEL": {
        // As in the traversal: the oldest running job, else the first queued one.
        const { context } = actor.getSnapshot();
        const job = context.running[0] ?? context.queue[0];
        if (job) actor.send({ type: "CANCEL", job: job.ticket });
        break;
      }
      case "SHUTDOWN":
      case "LOAD.PROGRESS":
      case "GENERATION.PROGRESS":
        actor.send(event);
        break;
      case "GENERATION.STOPPED": {
        // The generate actor reports it itself on ABORT; sent here too, for the oldest running job.
        const job = actor.getSnapshot().context.running[0];
        if (job) actor.send({ ...event, job: job.ticket });
        break;
      }
      case "LOAD.PREVIOUS_DISPOSED":
        engine.passValidation();
        break;
      case "LOAD.DONE":
        engine.passValidation();
        await settle();
        engine.finishLoad();
        break;
      case "LOAD.FAILED":
        if (engine.validation) engine.failValidation();
        else engine.failLoad();
        break;
      case "GENERATION.DONE":
        engine.finishGeneration();
        break;
      case "GENERATION.FAILED":
        engine.failGeneration(event.error.code);
        break;
      default:
        finishDisposal();
    }
    await settle();
  }
  return { actor, engine, exec, tickets };
}

describe("runtime machine, model-based", () => {
  const adjacency = getAdjacencyMap(definition, traversal);
  const shortest = new Map(getShortestPaths(definition, traversal).map((p) => [serializeState(p.state as Snapshot), p]));

  it("reaches every state of the definition", () => {
    const reached = new Set([...shortest.values()].map((p) => stateName(p.state as Snapshot)));
    assert.deepEqual([...reached].sort(), ["cancelling", "empty", "generating", "idle", "loading", "stopped", "stopping"]);
  });

  let transitions = 0;
  type Edge = { event: RuntimeEvent; state: Snapshot };
  for (const [from, { transitions: byEvent }] of Object.entries(adjacency) as Array<[string, { transitions: Record<string, Edge> }]>) {
    const path = shortest.get(from);
    assert.ok(path, `a path to ${from}`);
    for (const [eventKey, { event, state: expected }] of Object.entries(byEvent)) {
      transitions++;
      it(`${from} --${eventKey}--> ${serializeState(expected as Snapshot)}`, async () => {
        const sut = system();
        try {
          for (const step of path.steps.slice(1) as Array<{ event: unknown; state: unknown }>) {
            await sut.exec(step.event as RuntimeEvent);
            assert.equal(serializeState(sut.actor.getSnapshot()), serializeState(step.state as Snapshot), `after ${serializeEvent(step.event as RuntimeEvent)}`);
          }
          await sut.exec(event as RuntimeEvent);
          assert.equal(serializeState(sut.actor.getSnapshot()), serializeState(expected as Snapshot));
          // Every request that reached a state which is not working on it has been answered.
          const { context } = sut.actor.getSnapshot();
          const open = sut.tickets.filter((t) => !t.settled).length;
          // A stopped job is answered before its engine has ended: running, but no longer owed an answer.
          const owed = context.running.filter((j) => !j.ticket.settled).length;
          const held = (context.load ? 1 : 0) + owed + context.queue.length + context.stopTickets.length;
          assert.equal(open, held, "no request is left without an answer or an owner");
        } finally {
          sut.actor.stop();
        }
      });
    }
  }

  it("found the transitions to replay", () => {
    assert.ok(transitions > 60, `${transitions} transitions`);
  });
});

describe("runtime machine, specific behaviour", () => {
  /** A runtime with a model loaded and one job running on the fake engine (tickets: load, run). */
  async function generating(): Promise<ReturnType<typeof system>> {
    const sut = system();
    await sut.exec({ type: "LOAD", path: "/m", settings: {}, ticket: createTicket() });
    await sut.exec({ type: "LOAD.DONE", model: fakeModel });
    await sut.exec({ type: "RUN", request: REQUEST, ticket: createTicket() });
    return sut;
  }

  it("answers STOP only once the generation has really ended", async () => {
    const sut = await generating();
    const stop = createTicket<{ stopped: boolean; dropped: number }>();
    sut.actor.send({ type: "STOP", all: false, ticket: stop });
    await settle();
    assert.equal(stateName(sut.actor.getSnapshot()), "cancelling");
    assert.equal(sut.engine.generation?.signal.aborted, true, "the abort reached the engine");
    assert.equal(stop.settled, false, "no answer while the engine is still on its last token");
    await sut.exec({ type: "GENERATION.DONE", job: JOB, result: RESULT });
    assert.deepEqual(await stop.promise, { stopped: true, dropped: 0 });
    assert.equal(await sut.tickets[1].promise.then((r) => (r as { finishReason: string }).finishReason), "cancelled");
    assert.equal(stateName(sut.actor.getSnapshot()), "idle");
    sut.actor.stop();
  });

  it("answers a stopped generation at once, and starts the next only when the engine has ended", async () => {
    const sut = await generating();
    const running = sut.tickets[1];
    await sut.exec({ type: "STOP", all: false, ticket: createTicket() });
    assert.equal(stateName(sut.actor.getSnapshot()), "cancelling", "the engine is still on its last token");
    assert.equal(running.settled, true, "the requester did not wait for it");
    const answer = (await running.promise) as typeof RESULT;
    assert.equal(answer.finishReason, "cancelled");
    assert.equal(answer.text, "", "what had been sent when it stopped: nothing, from this fake engine");

    await sut.exec({ type: "RUN", request: REQUEST, ticket: createTicket() });
    assert.equal(sut.actor.getSnapshot().context.queue.length, 1, "a new request waits for the sequence");
    assert.equal(sut.engine.generations.length, 1);
    await sut.exec({ type: "GENERATION.DONE", job: JOB, result: RESULT });
    assert.equal(stateName(sut.actor.getSnapshot()), "generating");
    assert.equal(sut.actor.getSnapshot().context.running.length, 1, "the next one runs once the engine has ended");
    assert.equal(sut.tickets[3].settled, false);
    sut.actor.stop();
  });

  it("frees the model and lands in empty with last_error after an engine failure", async () => {
    const sut = await generating();
    await sut.exec({ type: "GENERATION.FAILED", job: JOB, error: new KekahydeError("ENGINE_FAILURE", "x") });
    const s = sut.actor.getSnapshot();
    assert.equal(stateName(s), "empty");
    assert.equal(s.context.lastError?.code, "ENGINE_FAILURE");
    assert.equal(sut.engine.disposedModels, 1);
    await assert.rejects(sut.tickets[1].promise, /ENGINE_FAILURE/);
    sut.actor.stop();
  });

  it("keeps the previous model when the new file fails validation, and frees it only once the new one is valid", async () => {
    const sut = system();
    await sut.exec({ type: "LOAD", path: "/a", settings: {}, ticket: createTicket() });
    await sut.exec({ type: "LOAD.DONE", model: fakeModel });
    await sut.exec({ type: "LOAD", path: "/bad", settings: {}, ticket: createTicket() });
    await sut.exec({ type: "LOAD.FAILED", error: new KekahydeError("MODEL_INVALID", "x") });
    assert.equal(stateName(sut.actor.getSnapshot()), "idle");
    assert.equal(sut.actor.getSnapshot().context.model?.info.name, "fake-1");
    assert.equal(sut.engine.disposedModels, 0);
    await sut.exec({ type: "LOAD", path: "/b", settings: {}, ticket: createTicket() });
    await sut.exec({ type: "LOAD.DONE", model: fakeModel });
    assert.equal(sut.engine.disposedModels, 1);
    assert.equal(sut.actor.getSnapshot().context.model?.info.name, "fake-2");
    sut.actor.stop();
  });
});
