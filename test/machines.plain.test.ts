import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createActor, fromCallback, type AnyActorRef } from "xstate";
import type { GenerateResult } from "../src/domain/generation.ts";
import { createSupervisorLogic } from "../src/machines/logic.ts";
import type { LoadResult } from "../src/machines/runtimeMachine.ts";
import { sendRequest } from "../src/machines/sendRequest.ts";
import { createTicket } from "../src/machines/ticket.ts";
import { FakeEngine, settle } from "./helpers/fakeEngine.ts";

/**
 * A machine's context is data that can be serialised (issue 22): the engine and the resource sampler are
 * provided as actors, a loaded model's handle, the requests' tickets and their text listeners are kept in
 * registries, and the context keeps facts and keys. The only references left are actor references (a model's
 * runtime, a runtime's supervisor), which XState serialises itself, as `{ xstate$$type, id }`.
 */

const GENERATE = { kind: "generate" as const, request: { prompt: "p", raw: true, sampling: {} } };

/** The context with each actor reference written as XState writes it: what JSON of a plain context gives back. */
function asData(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(asData);
  if (value && typeof value === "object") {
    if ("sessionId" in value && "send" in value) return (value as AnyActorRef & { toJSON(): unknown }).toJSON();
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asData(v)]));
  }
  return value;
}

/** Every value in `value` is JSON data (or an actor reference): no function, no class instance. */
function assertPlain(value: unknown, path = "context"): void {
  if (value === null || ["string", "number", "boolean"].includes(typeof value)) return;
  assert.notEqual(typeof value, "function", `${path} is a function`);
  assert.equal(typeof value, "object", `${path} is a ${typeof value}`);
  if ("sessionId" in (value as object) && "send" in (value as object)) return;
  const proto = Object.getPrototypeOf(value) as unknown;
  assert.ok(Array.isArray(value) || proto === Object.prototype, `${path} is an instance of ${(value as object).constructor?.name}`);
  for (const [k, v] of Object.entries(value as object)) assertPlain(v, `${path}.${k}`);
}

describe("the machines' context is plain data", () => {
  it("with a model loaded, a job running and one waiting, the supervisor's and the runtime's contexts survive JSON", async () => {
    const engine = new FakeEngine();
    const machine = createSupervisorLogic(engine).provide({ actors: { monitor: fromCallback(() => {}) as never } });
    const actor = createActor(machine, { input: { maxModels: 2 } });
    actor.start();
    const loaded = sendRequest(actor, { type: "LOAD", path: "/models/a.gguf", settings: {}, ticket: createTicket<LoadResult>() });
    await settle();
    engine.passValidation();
    await settle();
    engine.finishLoad();
    assert.equal((await loaded).model.path, "/models/a.gguf");
    const chunks: string[] = [];
    const running = sendRequest(actor, { type: "RUN", id: "job-1", model: "a", work: GENERATE, onText: (c) => chunks.push(c), ticket: createTicket<GenerateResult>() });
    const waiting = sendRequest(actor, { type: "RUN", id: "job-2", model: "a", work: GENERATE, ticket: createTicket<GenerateResult>() });
    await settle();

    const context = actor.getSnapshot().context;
    const runtime = context.models.a.ref.getSnapshot().context;
    assert.equal(runtime.running.length, 1, "a job runs");
    assert.equal(runtime.queue.length, 1, "a job waits");
    assert.equal(runtime.model?.path, "/models/a.gguf", "the runtime keeps the model's facts");
    for (const [name, c] of [["supervisor", context], ["runtime", runtime]] as const) {
      assertPlain(c, name);
      assert.deepEqual(JSON.parse(JSON.stringify(c)), asData(c), `the ${name}'s context survives JSON`);
    }

    engine.finishGeneration();
    await settle();
    engine.finishGeneration();
    assert.equal((await running).text, "done", "answered through the ticket the context only names");
    assert.equal((await waiting).text, "done");
    actor.stop();
  });
});
