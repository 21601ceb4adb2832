import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createActor, fromCallback, SimulatedClock } from "xstate";
import type { GenerateResult } from "../src/domain/generation.ts";
import type { LoadResult } from "../src/machines/runtimeMachine.ts";
import { sendRequest } from "../src/machines/sendRequest.ts";
import { createSupervisorLogic } from "../src/machines/logic.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { FakeEngine, settle } from "./helpers/fakeEngine.ts";

/**
 * Every time the machines record is read from the actor system's clock (src/machines/clock.ts): with XState's
 * SimulatedClock, a test decides each timestamp, in the supervisor and in the runtimes it spawns.
 */

const KEEP_ALIVE_MS = 60_000;
const GENERATE = { kind: "generate" as const, request: { prompt: "p", raw: true, sampling: {} } };
const iso = (ms: number) => new Date(ms).toISOString();

describe("the machines' clock", () => {
  it("stamps loads, uses, keep-alives, jobs and errors with the actor system's time", async () => {
    const engine = new FakeEngine();
    const clock = new SimulatedClock();
    const machine = createSupervisorLogic(engine).provide({ actors: { monitor: fromCallback(() => {}) as never } });
    const actor = createActor(machine, { clock, input: { keepAliveMs: KEEP_ALIVE_MS, maxModels: 2 } });
    actor.start();
    const models = () => actor.getSnapshot().context.models;
    const runtime = () => models().a.ref.getSnapshot().context;

    clock.set(5_000);
    void sendRequest(actor, { type: "LOAD", path: "/models/a.gguf", settings: {}, ticket: createTicket<LoadResult>() });
    await settle();
    engine.passValidation();
    await settle();
    assert.equal(models().a.loadedAt, 5_000, "loaded at the clock's time");
    assert.match(models().a.ref.id, /^model:a:5000$/, "the runtime's id carries the same time");

    clock.set(5_200);
    engine.finishLoad();
    await settle();
    assert.equal(models().a.phase, "idle");
    assert.equal(models().a.lastUsed, 5_200, "idle: last used now");
    assert.equal(models().a.expiresAt, 5_200 + KEEP_ALIVE_MS, "its keep-alive ends on the same clock as its timer");

    clock.set(6_000);
    void sendRequest(actor, { type: "RUN", id: "job-1", model: "a", work: GENERATE, ticket: createTicket<GenerateResult>() });
    await settle();
    assert.equal(models().a.lastUsed, 6_000, "used now");
    assert.equal(runtime().running[0].enqueuedAt, 6_000, "the job was queued now");
    assert.equal(runtime().running[0].stats?.startedAt, 6_000, "and started now");

    clock.set(6_500);
    engine.finishGeneration();
    await settle();
    assert.equal(runtime().lastGeneration?.startedAt, 6_000);
    assert.equal(runtime().lastGeneration?.endedAt, 6_500, "the generation ended now");
    assert.equal(models().a.expiresAt, 6_500 + KEEP_ALIVE_MS);

    clock.set(7_000);
    void sendRequest(actor, { type: "LOAD", path: "/models/b.gguf", settings: {}, ticket: createTicket<LoadResult>() });
    await settle();
    engine.failValidation();
    await settle();
    assert.equal(actor.getSnapshot().context.lastError?.at, iso(7_000), "a refused load's error, stamped now");

    clock.set(8_000);
    void sendRequest(actor, { type: "LOAD", path: "/models/c.gguf", settings: {}, ticket: createTicket<LoadResult>() });
    await settle();
    engine.passValidation();
    await settle();
    clock.set(8_100);
    engine.failLoad();
    await settle();
    assert.equal(actor.getSnapshot().context.lastError?.code, "MODEL_INVALID");
    assert.equal(actor.getSnapshot().context.lastError?.at, iso(8_100), "a runtime's failed load, stamped by the runtime on the shared clock");

    clock.set(9_000);
    engine.loseEngine("/models/a.gguf");
    await settle();
    assert.equal(actor.getSnapshot().context.crashes["/models/a.gguf"]?.error.at, iso(9_000), "a lost engine, stamped now");

    actor.stop();
  });
});
