import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createEmptyActor, initialTransition } from "xstate";
import type { ErrorCode } from "../src/errors.ts";
import { rulesOf } from "../src/machines/chart.ts";
import type { ModelPhaseEvent, RuntimePhase } from "../src/machines/runtimeMachine.ts";
import { classifyReport, REPORT_MEANINGS, type ReportMeaning } from "../src/machines/supervisor/reports.ts";
import { supervisorMachine, type ModelEntry, type RuntimeRef, type SupervisorContext } from "../src/machines/supervisorMachine.ts";

/**
 * What a runtime's MODEL.PHASE report means is decided once (src/machines/supervisor/reports.ts), and each of
 * the supervisor's MODEL.PHASE branches tests one meaning. Stated here for random contexts and reports: exactly
 * one of the branches' guards holds, so the order they are written in decides nothing. (What each meaning
 * does is the model-based tests' business: test/supervisor.model.test.ts.)
 */

const PHASES: RuntimePhase[] = ["empty", "loading", "idle", "busy", "unloading", "stopping", "stopped"];
const ERRORS: Array<ErrorCode | null> = [null, "ENGINE_CRASHED", "ENGINE_TIMEOUT", "ENGINE_FAILURE", "MODEL_INVALID"];

/** The MODEL.PHASE branches of `serving`, in the order the chart tries them, each with its guard's code. */
const branches = rulesOf(supervisorMachine).filter((r) => r.state === "serving" && r.event === "MODEL.PHASE");
const guards = supervisorMachine.implementations.guards as Record<string, (args: { context: SupervisorContext; event: ModelPhaseEvent }, params: undefined) => boolean>;

const base = initialTransition(supervisorMachine, {})[0].context;

const entryArb = fc.record({
  phase: fc.constantFrom<ModelEntry["phase"]>("new", ...PHASES),
  keepAliveMs: fc.constantFrom(-1, 0, 10, 300_000),
});

/** A context with up to three loaded and two departing models, and a report from one of them or a stranger. */
const caseArb = fc
  .record({
    loaded: fc.array(entryArb, { maxLength: 3 }),
    departing: fc.array(entryArb, { maxLength: 2 }),
    from: fc.nat(),
    phase: fc.constantFrom(...PHASES),
    error: fc.constantFrom(...ERRORS),
  })
  .map(({ loaded, departing, from, phase, error }) => {
    const entry = (e: { phase: ModelEntry["phase"]; keepAliveMs: number }, name: string): ModelEntry => ({
      name,
      ref: createEmptyActor() as unknown as RuntimeRef,
      path: `/models/${name}.gguf`,
      phase: e.phase,
      bytes: 1,
      loadedAt: 0,
      loadOrder: 0,
      lastUsed: 0,
      useOrder: 0,
      keepAliveMs: e.keepAliveMs,
      expiresAt: null,
      fileSize: 1,
      mtimeMs: 0,
    });
    const models = Object.fromEntries(loaded.map((e, i) => [`m${i}`, entry(e, `m${i}`)]));
    const gone = departing.map((e, i) => entry(e, i === 0 ? "m0" : `d${i}`));
    const context: SupervisorContext = { ...base, models, departing: gone };
    // The reporter: a loaded model, a departing one, or a runtime the supervisor no longer knows.
    const refs = [...Object.values(models), ...gone].map((m) => m.ref);
    const ref = from % (refs.length + 1) === refs.length ? createEmptyActor() : refs[from % (refs.length + 1)];
    const event: ModelPhaseEvent = { type: "MODEL.PHASE", name: "m0", phase, ref, error: error && { code: error, message: "x", at: new Date(0).toISOString() } };
    return { context, event };
  });

describe("what a MODEL.PHASE report means", () => {
  it("every MODEL.PHASE branch has its own guard", () => {
    assert.ok(branches.length >= REPORT_MEANINGS.length, `${branches.length} branches`);
    assert.ok(branches.every((b) => b.guard !== null && b.guard in guards), "no branch without a guard");
    assert.equal(new Set(branches.map((b) => b.guard)).size, branches.length, "no guard twice");
  });

  it("exactly one branch's guard holds for every report, whatever the order of the branches", () => {
    const seen = new Set<ReportMeaning>();
    fc.assert(
      fc.property(caseArb, ({ context, event }) => {
        seen.add(classifyReport(context, event));
        const holding = branches.filter((b) => guards[b.guard!]({ context, event }, undefined)).map((b) => b.guard);
        assert.equal(holding.length, 1, `${classifyReport(context, event)}: ${holding.join(", ") || "none"} hold`);
      }),
      { numRuns: 5000, seed: 22 },
    );
    assert.deepEqual([...REPORT_MEANINGS].filter((m) => !seen.has(m)), [], "the random reports met every meaning");
  });
});
