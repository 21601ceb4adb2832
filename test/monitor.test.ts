import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { createCpuLoadMeter, loadBetween } from "../src/monitor/cpuLoad.ts";
import { createResourceSampler } from "../src/monitor/resourceSampler.ts";

/**
 * Minor page faults of this process's children that have ended and been waited for (cminflt, the 11th field
 * of /proc/self/stat, Linux). Any process this one starts and reaps adds to it, however short-lived (`true`
 * run by execSync adds about a hundred): processes started elsewhere on the machine do not.
 */
function reapedChildrenFaults(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  // Fields after the command name (which may contain spaces) start at the 3rd: cminflt is the 11th.
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[8]);
}

/** Counts the child processes this process starts asynchronously (spawn, exec, fork), from the moment each starts. */
function countAsyncSpawns(): { count(): number; stop(): void } {
  let spawned = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === "PROCESSWRAP") spawned++;
    },
  }).enable();
  return { count: () => spawned, stop: () => void hook.disable() };
}

test("machine CPU load is the busy share of CPU time between two readings", () => {
  assert.equal(loadBetween({ busy: 100, total: 1000 }, { busy: 350, total: 2000 }), 25);
  assert.equal(loadBetween({ busy: 0, total: 0 }, { busy: 0, total: 0 }), 0, "no time passed: no load, not NaN");
  let reading = { busy: 0, total: 0 };
  const meter = createCpuLoadMeter(() => reading);
  reading = { busy: 500, total: 1000 };
  assert.equal(meter(), 50);
  reading = { busy: 500, total: 2000 };
  assert.equal(meter(), 0, "each reading is measured against the previous one");
});

test("sampling resources starts no processes (a synchronous spawn would freeze the event loop each second)", { skip: process.platform !== "linux" }, async () => {
  const sample = createResourceSampler();
  await sample();
  // The test's own process only: a synchronous spawn has ended and been reaped when it returns (its page
  // faults are then counted in cminflt); an asynchronous one is seen as it starts.
  const faultsBefore = reapedChildrenFaults();
  const spawns = countAsyncSpawns();
  try {
    for (let i = 0; i < 3; i++) {
      // systeminformation's currentLoad() caches for 200 ms; sample as the monitor does, spaced out.
      await sleep(250);
      const s = await sample();
      assert.ok(s.system.cpu_load >= 0 && s.system.cpu_load <= 100);
      assert.ok(s.system.memory_total > 0 && s.memory_usage > 0);
    }
  } finally {
    spawns.stop();
  }
  assert.equal(spawns.count(), 0, "processes were started while sampling");
  assert.equal(reapedChildrenFaults(), faultsBefore, "processes were started and ended while sampling");
});
