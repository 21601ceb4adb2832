import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createActor } from "xstate";
import type { GenerateResult } from "../src/domain/generation.ts";
import type { JobResult } from "../src/domain/jobs.ts";
import { KekahydeError } from "../src/errors.ts";
import { createRuntimeLogic } from "../src/machines/logic.ts";
import { RELOADS_AFTER_LOSS, runtimeMachine, type LoadResult, type StopResult, type UnloadResult } from "../src/machines/runtimeMachine.ts";
import { stateName } from "../src/machines/selectors.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { FakeEngine, fakePlan, settle } from "./helpers/fakeEngine.ts";
import { TransitionCoverage } from "./helpers/machineCoverage.ts";
import { pairedRequests } from "./oracles/pairedRequests.ts";
import { finishOldest, Reply, RuntimeOracle, type EngineGeneration } from "./oracles/runtimeOracle.ts";

/**
 * Model-based tests of the runtime machine against a reference model of its own (test/oracles/
 * runtimeOracle.ts): every operation below is applied to both, and after every step the state users see,
 * the jobs running and waiting, whether the model is held, and the answer of every request so far must
 * agree. The walks: every edge of the reference model's state graph (each from a shortest path), every
 * sequence of up to three operations, and long random sequences. A coverage check proves that the walks
 * took every transition of the machine's definition. The fake engine is allowed here, and only here,
 * because it lets each engine outcome happen on cue.
 */

const SLOTS = 2;
const MAX_QUEUE = 2;
const REQUEST = { prompt: "p", raw: true, sampling: {} };
const GENERATE = { kind: "generate" as const, request: REQUEST };
const EMBED = { kind: "embed" as const, request: { inputs: ["p"], truncate: false } };
const TOKENIZE = { kind: "tokenize" as const, request: { text: "p", addSpecial: false, withPieces: false } };
const WORK = { run: GENERATE, embed: EMBED, tokenize: TOKENIZE } as const;
const KIND = { run: "generate", embed: "embed", tokenize: "tokenize" } as const;

type Op = "load" | "loadDone" | "loadFailed" | "run" | "embed" | "tokenize" | "stop" | "stopAll" | "stopJob" | "stopJobNewest" | "stopJobGone" | "unload" | "cancel" | "cancelNewest" | "finish" | "fail" | "engineFail" | "lose" | "disposed" | "shutdown";
const OPS: Op[] = ["load", "loadDone", "loadFailed", "run", "embed", "tokenize", "stop", "stopAll", "stopJob", "stopJobNewest", "stopJobGone", "unload", "cancel", "cancelNewest", "finish", "fail", "engineFail", "lose", "disposed", "shutdown"];


const coverage = new TransitionCoverage(runtimeMachine);

const pickCancelled = (op: "cancel" | "cancelNewest", oracle: RuntimeOracle) =>
  op === "cancel" ? (oracle.running[0] ?? oracle.queue[0]) : (oracle.queue.at(-1) ?? oracle.running.at(-1));

/** The real machine (over the fake engine) and the reference model, driven by the same operations. */
function system(limits = { slots: SLOTS, maxQueue: MAX_QUEUE }) {
  const engine = new FakeEngine();
  const actor = createActor(createRuntimeLogic(engine), { inspect: coverage.inspect, input: { slots: limits.slots, maxQueue: limits.maxQueue } });
  actor.start();
  const generations: EngineGeneration[] = [];
  const oracle = new RuntimeOracle(limits, generations);
  const requests = pairedRequests();
  let loads = 0;
  let jobs = 0;

  /** A ticket for the machine and its reply in the reference model, side by side. */
  const request = <T,>() => requests.request<T>();
  /** As sendRequest does: a stopped machine takes no events, so the request is answered at once. */
  function send(event: Parameters<typeof actor.send>[0]): void {
    if (actor.getSnapshot().status === "active") actor.send(event);
    else if ("ticket" in event) event.ticket.reject(new KekahydeError("SHUTTING_DOWN", "shut down"));
  }

  async function exec(op: Op): Promise<void> {
    switch (op) {
      case "load": {
        const { ticket, reply } = request<LoadResult>();
        const path = `/models/m${++loads}.gguf`;
        send({ type: "LOAD", plan: fakePlan(path), ticket });
        oracle.loadModel(path, reply);
        break;
      }
      case "loadDone":
        engine.finishLoad();
        oracle.loadDone();
        break;
      case "loadFailed":
        engine.failLoad();
        oracle.loadFailed();
        break;
      case "run":
      case "embed":
      case "tokenize": {
        const { ticket, reply } = request<JobResult>();
        const id = `job-${++jobs}`;
        send({ type: "RUN", id, work: WORK[op], ticket });
        oracle.run(id, reply, KIND[op]);
        break;
      }
      case "stop":
      case "stopAll": {
        const { ticket, reply } = request<StopResult>();
        send({ type: "STOP", all: op === "stopAll", ticket });
        oracle.stop(op === "stopAll", reply);
        break;
      }
      case "stopJob":
      case "stopJobNewest":
      case "stopJobGone": {
        // STOP {"id"}: the oldest running job (else the first waiting), or the newest; or a job it does not hold.
        const job = (op !== "stopJobGone" && pickCancelled(op === "stopJob" ? "cancel" : "cancelNewest", oracle)?.id) || "job-gone";
        const { ticket, reply } = request<StopResult>();
        send({ type: "STOP", all: false, request: job, ticket });
        oracle.stop(false, reply, job);
        break;
      }
      case "unload": {
        const { ticket, reply } = request<UnloadResult>();
        send({ type: "UNLOAD", ticket });
        oracle.unload(reply);
        break;
      }
      case "cancel":
      case "cancelNewest": {
        // The oldest running job, else the first waiting one; or the newest, waiting or running.
        const job = pickCancelled(op, oracle);
        if (job) {
          send({ type: "CANCEL", job: job.id });
          oracle.cancel(job.id);
        }
        break;
      }
      case "finish":
        engine.finishGeneration();
        finishOldest(generations);
        break;
      case "fail":
        engine.failGeneration("PROMPT_TOO_LONG");
        finishOldest(generations, { failed: "PROMPT_TOO_LONG" });
        break;
      case "engineFail":
        engine.failGeneration("ENGINE_FAILURE");
        finishOldest(generations, { failed: "ENGINE_FAILURE" });
        break;
      case "lose":
        if (oracle.path) engine.loseEngine(oracle.path);
        oracle.engineLost();
        break;
      case "disposed":
        engine.finishDisposals();
        oracle.disposed();
        break;
      case "shutdown":
        send({ type: "SHUTDOWN" });
        oracle.shutdown();
        break;
    }
    await settle();
  }

  /** What the machine shows, in the reference model's terms. */
  function observed() {
    const s = actor.getSnapshot();
    return { state: stateName(s), holdsModel: s.context.model !== null, running: s.context.running.length, queue: s.context.queue.length, answers: requests.live() };
  }
  function predicted() {
    return { state: oracle.phase, holdsModel: oracle.holdsModel, running: oracle.running.length, queue: oracle.queue.length, answers: requests.expected() };
  }
  return { actor, engine, oracle, exec, observed, predicted };
}

async function replay(ops: readonly Op[]): Promise<void> {
  const sut = system();
  try {
    for (const [i, op] of ops.entries()) {
      await sut.exec(op);
      assert.deepEqual(sut.observed(), sut.predicted(), `after [${ops.slice(0, i + 1).join(", ")}]`);
    }
  } finally {
    sut.actor.stop();
  }
}

/** The reference model's state graph, breadth first from the start: each state with a shortest path to it. */
function explore(maxDepth: number): Map<string, Op[]> {
  const paths = new Map<string, Op[]>();
  const keyAfter = (ops: Op[]): string => {
    const generations: EngineGeneration[] = [];
    const oracle = new RuntimeOracle({ slots: SLOTS, maxQueue: MAX_QUEUE }, generations);
    let n = 0;
    for (const op of ops) {
      const reply = new Reply();
      if (op === "load") oracle.loadModel(`/models/m${++n}.gguf`, reply);
      else if (op === "loadDone") oracle.loadDone();
      else if (op === "loadFailed") oracle.loadFailed();
      else if (op === "run" || op === "embed" || op === "tokenize") oracle.run(`job-${++n}`, reply, KIND[op]);
      else if (op === "stop" || op === "stopAll") oracle.stop(op === "stopAll", reply);
      else if (op === "stopJob" || op === "stopJobNewest" || op === "stopJobGone")
        oracle.stop(false, reply, (op !== "stopJobGone" && pickCancelled(op === "stopJob" ? "cancel" : "cancelNewest", oracle)?.id) || "job-gone");
      else if (op === "unload") oracle.unload(reply);
      else if (op === "cancel" || op === "cancelNewest") {
        const job = pickCancelled(op, oracle);
        if (job) oracle.cancel(job.id);
      } else if (op === "finish") finishOldest(generations);
      else if (op === "fail") finishOldest(generations, { failed: "PROMPT_TOO_LONG" });
      else if (op === "engineFail") finishOldest(generations, { failed: "ENGINE_FAILURE" });
      else if (op === "lose") oracle.engineLost();
      else if (op === "disposed") oracle.disposed();
      else oracle.shutdown();
    }
    return oracle.key() + JSON.stringify(generations.map((g) => (g.job ? "job" : "orphan")));
  };
  let frontier: Op[][] = [[]];
  paths.set(keyAfter([]), []);
  for (let depth = 0; depth < maxDepth && frontier.length > 0; depth++) {
    const next: Op[][] = [];
    for (const path of frontier) {
      for (const op of OPS) {
        // Token jobs need no slot, so they add up without bound: one per path, early in it, keeps the graph
        // small (the three-operation and random walks send more).
        if (op === "tokenize" && (path.includes("tokenize") || depth > 3)) continue;
        const k = keyAfter([...path, op]);
        if (!paths.has(k)) {
          paths.set(k, [...path, op]);
          next.push([...path, op]);
        }
      }
    }
    frontier = next;
  }
  return paths;
}

describe("runtime machine, model-based against a reference model", () => {
  const states = explore(9);

  it(`every edge of the reference model's state graph (${states.size} states × ${OPS.length} operations)`, async () => {
    let edges = 0;
    for (const path of states.values()) {
      for (const op of OPS) {
        await replay([...path, op]);
        edges++;
      }
    }
    assert.ok(edges > 500, `${edges} edges`);
  });

  it("every sequence of up to three operations", async () => {
    for (const a of OPS) for (const b of OPS) for (const c of OPS) await replay([a, b, c]);
  });

  it("long random sequences", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...OPS), { minLength: 5, maxLength: 40 }), async (ops) => replay(ops)),
      { numRuns: 150, seed: 12 },
    );
  });
});

describe("runtime machine, specific behaviour", () => {
  /** A runtime with a model loaded and one job running on the fake engine. */
  async function generating(limits = { slots: 1, maxQueue: MAX_QUEUE }) {
    const sut = system(limits);
    await sut.exec("load");
    await sut.exec("loadDone");
    await sut.exec("run");
    return sut;
  }

  it("answers STOP only once the generation has really ended", async () => {
    const sut = await generating();
    const stop = createTicket<StopResult>();
    sut.actor.send({ type: "STOP", all: false, ticket: stop });
    await settle();
    assert.equal(stateName(sut.actor.getSnapshot()), "cancelling");
    assert.equal(sut.engine.generation?.signal.aborted, true, "the abort reached the engine");
    assert.equal(stop.settled, false, "no answer while the engine is still on its last token");
    sut.engine.finishGeneration();
    await settle();
    assert.deepEqual(await stop.promise, { stopped: true, dropped: 0 });
    assert.equal(stateName(sut.actor.getSnapshot()), "idle");
    sut.actor.stop();
  });

  it("starts a request in a free slot at once even with --max-queue 0, and refuses only when every slot is taken", async () => {
    const sut = await generating({ slots: 2, maxQueue: 0 });
    const second = createTicket<GenerateResult>();
    sut.actor.send({ type: "RUN", id: "second", work: GENERATE, ticket: second });
    await settle();
    assert.equal(sut.actor.getSnapshot().context.running.length, 2, "two slots, two generations");
    assert.equal(second.settled, false);
    const third = createTicket<GenerateResult>();
    sut.actor.send({ type: "RUN", id: "third", work: GENERATE, ticket: third });
    await assert.rejects(third.promise, (e: { code: string; message: string }) => e.code === "QUEUE_FULL" && /no request waits/.test(e.message));
    sut.actor.stop();
  });

  it("answers tokens at once while every slot generates and the queue is full", async () => {
    const sut = await generating({ slots: 1, maxQueue: 0 });
    const tokens = createTicket<JobResult>();
    sut.actor.send({ type: "RUN", id: "tokens", work: TOKENIZE, ticket: tokens });
    await settle();
    assert.deepEqual(sut.actor.getSnapshot().context.running.map((j) => j.id), ["job-1", "tokens"], "started beside the generation");
    sut.engine.finishGeneration("/models/m1.gguf");
    sut.engine.finishGeneration("/models/m1.gguf");
    assert.deepEqual(await tokens.promise, { tokens: [1] });
    sut.actor.stop();
  });

  it("frees the model in `unloading` and reaches `empty` only once its memory is free", async () => {
    const sut = await generating();
    sut.engine.finishGeneration();
    await settle();
    const unload = createTicket<UnloadResult>();
    sut.actor.send({ type: "UNLOAD", ticket: unload });
    await settle();
    assert.equal(stateName(sut.actor.getSnapshot()), "unloading");
    assert.equal(unload.settled, false, "not answered before the model is freed");
    assert.equal(sut.engine.disposedModels, 0);
    sut.engine.finishDisposals();
    await settle();
    assert.equal(sut.engine.disposedModels, 1);
    assert.equal(stateName(sut.actor.getSnapshot()), "empty");
    assert.deepEqual(await unload.promise, { unloaded: true });
    sut.actor.stop();
  });

  it("an engine lost under a request: that request fails, the model is loaded again and the waiting one is served", async () => {
    const sut = await generating();
    await sut.exec("run");
    await sut.exec("lose");
    let s = sut.actor.getSnapshot();
    assert.equal(stateName(s), "loading", "the runtime loads the model again by itself");
    assert.equal(s.context.model, null);
    assert.equal(s.context.lastError?.code, "ENGINE_CRASHED");
    assert.equal(s.context.queue.length, 1, "the waiting request still waits");
    assert.deepEqual(sut.observed().answers, ["ok:loaded", "err:ENGINE_CRASHED", "pending"]);
    await sut.exec("loadDone");
    s = sut.actor.getSnapshot();
    assert.equal(stateName(s), "generating", "the waiting request runs on the reloaded model");
    assert.equal(s.context.lastError, null);
    sut.actor.stop();
  });

  it("a job that ends well between two losses lets the model be loaded again once more", async () => {
    const sut = await generating();
    for (let i = 0; i < RELOADS_AFTER_LOSS; i++) {
      await sut.exec("run");
      await sut.exec("lose");
      await sut.exec("loadDone");
    }
    // The fake engine still holds the lost engines' generations: the oldest end first, then the running one.
    while (stateName(sut.actor.getSnapshot()) !== "idle") await sut.exec("finish");
    await sut.exec("run");
    assert.equal(stateName(sut.actor.getSnapshot()), "generating");
    await sut.exec("lose");
    assert.equal(stateName(sut.actor.getSnapshot()), "loading", "the engine worked in between: this loss is reloaded too");
    sut.actor.stop();
  });

  it(`an engine lost ${RELOADS_AFTER_LOSS + 1} times in a row under requests, or while idle, leaves the model empty`, async () => {
    const sut = await generating();
    for (let i = 0; i < RELOADS_AFTER_LOSS; i++) {
      await sut.exec("run");
      await sut.exec("lose");
      assert.equal(stateName(sut.actor.getSnapshot()), "loading", `reload ${i + 1}`);
      await sut.exec("loadDone");
    }
    await sut.exec("lose");
    let s = sut.actor.getSnapshot();
    assert.equal(stateName(s), "empty", "no job ended well between the losses: the file is not retried again");
    assert.equal(s.context.lastError?.code, "ENGINE_CRASHED");
    assert.ok(sut.observed().answers.every((a) => a !== "pending"), "every request answered");
    const idle = await generating();
    idle.engine.finishGeneration();
    await settle();
    assert.equal(stateName(idle.actor.getSnapshot()), "idle");
    await idle.exec("lose");
    s = idle.actor.getSnapshot();
    assert.equal(stateName(s), "empty", "lost with no request running: nothing to serve, the model is gone");
    sut.actor.stop();
    idle.actor.stop();
  });
});

describe("runtime machine, coverage", () => {
  it("the walks and the tests above took every transition of the machine's definition", () => {
    assert.deepEqual(coverage.missing(), []);
  });
});
