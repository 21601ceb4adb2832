import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { rulesOf } from "../src/machines/chart.ts";
import { runtimeMachine } from "../src/machines/runtimeMachine.ts";
import { GUARD_MEANINGS, stateChartDoc } from "../src/machines/stateChartDoc.ts";
import { supervisorMachine } from "../src/machines/supervisorMachine.ts";

describe("docs/state-chart.md, the rules as named transitions", () => {
  const guards = new Set([...rulesOf(runtimeMachine), ...rulesOf(supervisorMachine)].flatMap((r) => (r.guard ? [r.guard] : [])));

  it("is the chart of the current machines (npm run docs:state-chart)", () => {
    assert.equal(readFileSync(new URL("../docs/state-chart.md", import.meta.url), "utf8"), stateChartDoc());
  });

  it("explains every guard the machines have, and no other", () => {
    assert.deepEqual([...guards].filter((g) => !(g in GUARD_MEANINGS)), [], "guards without a meaning");
    assert.deepEqual(Object.keys(GUARD_MEANINGS).filter((g) => !guards.has(g)), [], "meanings of guards no machine has");
  });

  it("names the rules that used to live in code", () => {
    const doc = stateChartDoc();
    const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const rule = (state: string, event: string, guard: string) => new RegExp(`\\| \`${escape(state)}\` \\| \`${escape(event)}\` \\| \`${guard}\` \\|`);
    // A free slot starts a request whatever --max-queue is.
    assert.match(doc, rule("loaded.busy.generating", "RUN", "hasFreeSlot"));
    // One transition per refusal reason of a placement.
    for (const guard of ["blockedByLoadingModels", "blockedByBusyModels", "overMachineMemory", "overMemoryBudget"]) assert.match(doc, rule("serving.placing", "always", guard));
    // What each reported phase means.
    for (const guard of ["isDepartedReport", "isFreshRuntimeReport", "reportsIdleUnloadingAtOnce", "reportsIdle", "reportsEmpty"]) assert.match(doc, rule("serving", "MODEL.PHASE", guard));
    // Fan-out answers gathered as events.
    assert.match(doc, rule("(any)", "FANOUT.ANSWER", "completesFanOut"));
    // Freeing a model is a state.
    assert.match(doc, /\| `unloading` \| `xstate\.done\.actor\.disposer` \| {2}\| `empty` \|/);
    assert.match(doc, /\| `replacing` \| `xstate\.done\.actor\.previousDisposer` \| {2}\| `loading` \|/);
  });
});
