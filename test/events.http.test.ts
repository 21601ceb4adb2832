import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { chartOf } from "../src/machines/chart.ts";
import { runtimeMachine } from "../src/machines/runtimeMachine.ts";
import { stateChartDoc } from "../src/machines/stateChartDoc.ts";
import { defaultModelName } from "../src/machines/supervisorMachine.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "./helpers/fixtures.ts";

describe("GET /events", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ monitorIntervalMs: 100 });
  });
  after(() => d?.close());

  it("streams a snapshot, then every transition with its cause, and monitor samples", async () => {
    const controller = new AbortController();
    const res = await fetch(d.url + "/events", { signal: controller.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const events: Array<{ type: string; data: any }> = [];
    const reading = (async () => {
      let buf = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (type && data) events.push({ type, data: JSON.parse(data) });
        }
      }
    })().catch(() => {});
    const path = await tinyModel();
    await d.post("/load_model", { path });
    await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5 });
    await new Promise((r) => setTimeout(r, 300));
    controller.abort();
    await reading;

    assert.equal(events[0].type, "snapshot");
    assert.equal(events[0].data.state, "empty");
    assert.deepEqual(events[0].data.active, ["runtime.empty"]);
    const transitions = events.filter((e) => e.type === "transition").map((e) => `${e.data.from}->${e.data.state} (${e.data.event})`);
    assert.deepEqual(transitions, ["empty->loading (LOAD)", "loading->idle (LOAD.DONE)", "idle->generating (RUN)", "generating->idle (GENERATION.DONE)"]);
    const generating = events.find((e) => e.type === "transition" && e.data.state === "generating")!;
    assert.deepEqual(generating.data.active, ["runtime.busy", "runtime.busy.generating"]);
    assert.equal(generating.data.queue_length, 0);
    assert.equal(generating.data.model, defaultModelName(path), "transitions name the model they belong to");
    const models = events.filter((e) => e.type === "models").map((e) => e.data.models.map((m: { name: string; phase: string }) => m.phase).join(","));
    assert.deepEqual(models.slice(0, 1), ["new"], "the supervisor's set of models is in the feed too");
    assert.ok(events.some((e) => e.type === "sample" && typeof e.data.memory_usage === "number"));
  });

  it("serves the chart of the machine's definition as /machine.json", async () => {
    const chart = (await (await d.get("/machine.json")).json()) as ReturnType<typeof chartOf>;
    assert.deepEqual(chart, JSON.parse(JSON.stringify(chartOf(runtimeMachine))));
    assert.ok(chart.edges.some((e) => e.source === "runtime.idle" && e.target === "runtime.busy" && e.event === "RUN"));
  });
});

describe("docs generated from the machine", () => {
  it("docs/state-chart.md is the chart of the current machine (npm run docs:state-chart)", () => {
    assert.equal(readFileSync(new URL("../docs/state-chart.md", import.meta.url), "utf8"), stateChartDoc());
  });
});
