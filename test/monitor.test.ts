import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { createCpuLoadMeter, loadBetween } from "../src/monitor/cpuLoad.ts";
import { createResourceSampler } from "../src/monitor/resourceSampler.ts";

/** The most recently assigned process id on this machine (Linux). */
const lastPid = () => Number(readFileSync("/proc/loadavg", "utf8").trim().split(/\s+/).at(-1));

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
  const before = lastPid();
  for (let i = 0; i < 3; i++) {
    // systeminformation's currentLoad() caches for 200 ms; sample as the monitor does, spaced out.
    await sleep(250);
    const s = await sample();
    assert.ok(s.system.cpu_load >= 0 && s.system.cpu_load <= 100);
    assert.ok(s.system.memory_total > 0 && s.memory_usage > 0);
  }
  assert.ok(lastPid() - before < 3, `processes were started while sampling (pid ${before} → ${lastPid()})`);
});
