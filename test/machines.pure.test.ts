import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { initialTransition, transition, type AnyStateMachine, type EventFromLogic, type SnapshotFrom } from "xstate";
import type { GenerateResult } from "../src/domain/generation.ts";
import type { LoadedModel } from "../src/engine/types.ts";
import { KekahydeError } from "../src/errors.ts";
import { runtimeMachine, type LoadResult, type StopResult, type UnloadResult } from "../src/machines/runtimeMachine.ts";
import { supervisorMachine } from "../src/machines/supervisorMachine.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { fakePlan } from "./helpers/fakeEngine.ts";

/**
 * Transitions are pure: computing one with XState's `transition()` answers no request, frees no model and
 * starts no generation. Those effects are named actions that run only when the returned actions are
 * executed. A test that calls `transition()` would otherwise answer clients and free models by itself.
 */

type Action = { type: string; exec?: (info: unknown, params: unknown) => void; info: unknown; params: unknown };
const run = (actions: unknown[]) => {
  for (const a of actions as Action[]) a.exec?.(a.info, a.params);
};

/** A model that counts what is done to it. */
function countingModel() {
  const calls = { generate: 0, dispose: 0 };
  const model: LoadedModel = {
    info: { path: "/m.gguf", name: "m", architecture: "llama", size_bytes: 1, context_size: 64, train_context_size: 64, threads: 1, gpu: false, gpu_layers: 0, engine_build: "fake", flash_attention: "auto", parallel: 1, engine_pid: 0 },
    generate: async () => {
      calls.generate++;
      return new Promise<GenerateResult>(() => {});
    },
    dispose: () => {
      calls.dispose++;
      return Promise.resolve();
    },
    embed: () => new Promise(() => {}),
    rank: () => new Promise(() => {}),
    tokenize: () => new Promise(() => {}),
    detokenize: () => new Promise(() => {}),
    lost: new Promise(() => {}),
  };
  return { model, calls };
}

/** An event of the machine, or one XState sends itself (an invoked actor's done or error). */
type StepEvent<M extends AnyStateMachine> = EventFromLogic<M> | { type: `xstate.${string}`; output?: unknown; error?: unknown };
function step<M extends AnyStateMachine>(machine: M, snapshot: SnapshotFrom<M>, event: StepEvent<M>): [SnapshotFrom<M>, unknown[]] {
  return transition(machine, snapshot, event as EventFromLogic<M>);
}

describe("pure transitions", () => {
  it("runtime: no ticket is settled and nothing freed or started until the actions run", () => {
    const { model, calls } = countingModel();
    let [s, actions]: [SnapshotFrom<typeof runtimeMachine>, unknown[]] = initialTransition(runtimeMachine, { slots: 1, maxQueue: 0 });

    const load = createTicket<LoadResult>();
    [s] = step(runtimeMachine, s, { type: "LOAD", plan: fakePlan("/m.gguf"), ticket: load });
    [s, actions] = step(runtimeMachine, s, { type: "LOAD.DONE", model: model.info });
    assert.equal(load.settled, false, "LOAD.DONE computed, the load not yet answered");
    run(actions);
    assert.equal(load.settled, true);

    const first = createTicket<GenerateResult>();
    [s, actions] = step(runtimeMachine, s, { type: "RUN", id: "first", work: { kind: "generate", request: { prompt: "p", raw: true, sampling: {} } }, ticket: first });
    run(actions);
    assert.equal(calls.generate, 0, "the generation actor is spawned as an action; nothing generates in a pure transition");

    const second = createTicket<GenerateResult>();
    [s, actions] = step(runtimeMachine, s, { type: "RUN", id: "second", work: { kind: "generate", request: { prompt: "p", raw: true, sampling: {} } }, ticket: second });
    assert.equal(second.settled, false, "the queue-full refusal is an action");
    run(actions);
    assert.equal(second.settled, true);

    const stop = createTicket<StopResult>();
    [s, actions] = step(runtimeMachine, s, { type: "STOP", all: true, ticket: stop });
    run(actions);
    const result: GenerateResult = { text: "", finishReason: "cancelled", promptTokens: 1, completionTokens: 0, durationMs: 1, firstTokenMs: null };
    [s, actions] = step(runtimeMachine, s, { type: "JOB.STOPPED", job: "first", result });
    assert.equal(first.settled, false, "the early answer of a stopped job is an action");
    run(actions);
    assert.equal(first.settled, true);
    [s, actions] = step(runtimeMachine, s, { type: "JOB.DONE", job: "first", result });
    assert.equal(stop.settled, false, "the STOP's answer is an action");
    run(actions);
    assert.equal(stop.settled, true);

    const unload = createTicket<UnloadResult>();
    [s, actions] = step(runtimeMachine, s, { type: "UNLOAD", ticket: unload });
    run(actions);
    assert.equal(calls.dispose, 0, "freeing the model is an invoked actor, not part of the transition");
    assert.deepEqual(s.value, "unloading");
    [s, actions] = step(runtimeMachine, s, { type: "xstate.done.actor.disposer" });
    assert.equal(unload.settled, false);
    run(actions);
    assert.equal(unload.settled, true);
    assert.equal(s.value, "empty");

    const late = createTicket<GenerateResult>();
    [s] = step(runtimeMachine, s, { type: "LOAD", plan: fakePlan("/m.gguf"), ticket: createTicket<LoadResult>() });
    [s] = step(runtimeMachine, s, { type: "LOAD.DONE", model: model.info });
    [s] = step(runtimeMachine, s, { type: "RUN", id: "late", work: { kind: "generate", request: { prompt: "p", raw: true, sampling: {} } }, ticket: late });
    [s, actions] = step(runtimeMachine, s, { type: "JOB.FAILED", job: "late", error: new KekahydeError("ENGINE_FAILURE", "x") });
    assert.equal(late.settled, false, "an engine failure's answers are actions");
    assert.equal(calls.dispose, 0);
    run(actions);
    assert.equal(late.settled, true);
  });

  it("supervisor: refusals, answers and fan-outs are actions", () => {
    let [s, actions]: [SnapshotFrom<typeof supervisorMachine>, unknown[]] = initialTransition(supervisorMachine, { maxModels: 2, maxMemory: { bytes: 1500 } });
    const unknown = createTicket<GenerateResult>();
    [s, actions] = step(supervisorMachine, s, { type: "RUN", id: "r", model: "nope", work: { kind: "generate", request: { prompt: "p", raw: true, sampling: {} } }, ticket: unknown });
    assert.equal(unknown.settled, false, "the 404 is an action");
    run(actions);
    await404(unknown);

    const bad = createTicket<LoadResult>();
    [s] = step(supervisorMachine, s, { type: "LOAD", path: "/models/bad.gguf", settings: {}, ticket: bad });
    [s, actions] = step(supervisorMachine, s, { type: "xstate.error.actor.admission", error: new KekahydeError("MODEL_INVALID", "not GGUF") });
    assert.equal(bad.settled, false, "a refused file is answered by an action");
    assert.equal(s.context.lastError?.code, "MODEL_INVALID", "and recorded by assign");
    run(actions);
    assert.equal(bad.settled, true);

    const big = createTicket<LoadResult>();
    [s] = step(supervisorMachine, s, { type: "LOAD", path: "/models/big.gguf", settings: {}, ticket: big });
    [s, actions] = step(supervisorMachine, s, { type: "xstate.done.actor.admission", output: fakePlan("/models/big.gguf", 2000) });
    assert.deepEqual(s.value, { serving: "ready" }, "placing decided at once: over the budget");
    assert.equal(big.settled, false, "the 507 is an action");
    run(actions);
    assert.equal(big.settled, true);

    const stop = createTicket<StopResult>();
    [s, actions] = step(supervisorMachine, s, { type: "STOP", all: false, ticket: stop });
    assert.equal(stop.settled, false, "nothing to stop: answered by an action");
    run(actions);
    assert.equal(stop.settled, true);

    const pending = createTicket<LoadResult>();
    [s] = step(supervisorMachine, s, { type: "LOAD", path: "/models/a.gguf", settings: {}, ticket: pending });
    [s, actions] = step(supervisorMachine, s, { type: "SHUTDOWN" });
    assert.equal(pending.settled, false, "a load refused by shutdown is answered by an action");
    run(actions);
    assert.equal(pending.settled, true);
  });
});

function await404(ticket: { settled: boolean; promise: Promise<unknown> }) {
  assert.equal(ticket.settled, true);
  void ticket.promise.catch((e: KekahydeError) => assert.equal(e.code, "UNKNOWN_MODEL"));
}
