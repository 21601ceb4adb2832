import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { chartOf, type Chart } from "../src/machines/chart.ts";
import { runtimeMachine } from "../src/machines/runtimeMachine.ts";
import { supervisorMachine } from "../src/machines/supervisorMachine.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "../testing/fixtures.ts";

type Sse = { type: string; data: any };

/** Reads the events of GET /events into `events` until `stop` is called. */
async function readEvents(url: string): Promise<{ events: Sse[]; res: Response; stop: () => Promise<void> }> {
  const controller = new AbortController();
  const res = await fetch(url + "/events", { signal: controller.signal });
  const events: Sse[] = [];
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
  return { events, res, stop: async () => (controller.abort(), await reading) };
}

/** The initial states from the top down: where a fresh machine is. */
function initialIds(chart: Chart): string[] {
  const ids: string[] = [];
  for (let id = chart.initial; id; id = chart.nodes.find((n) => n.id === id)?.initial ?? null) ids.push(id);
  return ids;
}

describe("GET /events", () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ monitorIntervalMs: 100 });
  });
  after(() => d?.close());

  it("streams a snapshot, then every transition with its cause, and monitor samples", async () => {
    const { events, res, stop } = await readEvents(d.url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const path = await tinyModel();
    await d.post("/load_model", { path });
    const name = (await d.status()).models[0].name as string;
    await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5 });
    const backToIdle = (e: Sse) => e.type === "transition" && e.data.state === "idle" && e.data.event === "JOB.DONE";
    await waitUntil(() => events.some(backToIdle) && events.some((e) => e.type === "sample"), 5_000, "the generation's end and a sample in the feed");
    await stop();

    assert.equal(events[0].type, "snapshot");
    assert.equal(events[0].data.state, "empty");
    assert.deepEqual(events[0].data.active, ["runtime.empty"]);
    assert.deepEqual(events[0].data.supervisor_active, initialIds(chartOf(supervisorMachine)), "the supervisor starts where its chart says");
    assert.deepEqual(events[0].data.models_active, {}, "no model, no runtime");
    const transitions = events.filter((e) => e.type === "transition").map((e) => `${e.data.from}->${e.data.state} (${e.data.event})`);
    assert.deepEqual(transitions, ["empty->loading (LOAD)", "loading->idle (LOAD.DONE)", "idle->generating (RUN)", "generating->idle (JOB.DONE)"]);
    const generating = events.find((e) => e.type === "transition" && e.data.state === "generating")!;
    assert.deepEqual(generating.data.active, ["runtime.loaded", "runtime.loaded.busy", "runtime.loaded.busy.generating"]);
    assert.equal(generating.data.queue_length, 0);
    assert.equal(generating.data.model, name, "transitions name the model they belong to");
    const models = events.filter((e) => e.type === "models").map((e) => e.data.models.map((m: { name: string; phase: string }) => m.phase).join(","));
    assert.deepEqual(models.slice(0, 1), ["new"], "the supervisor's set of models is in the feed too");
    assert.ok(events.some((e) => e.type === "sample" && typeof e.data.memory_usage === "number"));
    // The live page lights the feed's ids in the charts of /machine.json: they must be ids of those charts.
    const ids = (chart: Chart) => new Set(chart.nodes.map((n) => n.id));
    const runtimeIds = ids(chartOf(runtimeMachine));
    const supervisorIds = ids(chartOf(supervisorMachine));
    for (const e of events.filter((e) => e.type === "transition")) for (const id of e.data.active) assert.ok(runtimeIds.has(id), `${id} is in the runtime chart`);
    const supervisor = events.filter((e) => e.type === "supervisor");
    assert.ok(supervisor.length > 0, "the supervisor's transitions are in the feed");
    for (const e of supervisor) for (const id of e.data.active) assert.ok(supervisorIds.has(id), `${id} is in the supervisor chart`);
  });

  it("starts a late subscriber with every model's active states and the supervisor's", async () => {
    const { events, stop } = await readEvents(d.url);
    await waitUntil(() => events.length > 0, 5_000, "the first event");
    await stop();
    const status = await d.status();
    const snapshot = events[0];
    assert.equal(snapshot.type, "snapshot");
    const name = status.models[0].name as string;
    assert.deepEqual(Object.keys(snapshot.data.models_active), [name]);
    assert.ok(snapshot.data.models_active[name].at(-1).endsWith(".idle"), `the model is idle: ${snapshot.data.models_active[name]}`);
    assert.deepEqual(snapshot.data.active, snapshot.data.models_active[name], "`active` is the default model's");
    assert.deepEqual(snapshot.data.supervisor_active, initialIds(chartOf(supervisorMachine)), "the supervisor is back where it waits");
  });

  it("serves the charts of both machines' definitions as /machine.json", async () => {
    const charts = (await (await d.get("/machine.json")).json()) as { supervisor: Chart; runtime: Chart };
    assert.deepEqual(charts, JSON.parse(JSON.stringify({ supervisor: chartOf(supervisorMachine), runtime: chartOf(runtimeMachine) })));
    const key = (chart: Chart, id: string) => chart.nodes.find((n) => n.id === id)?.key;
    assert.ok(charts.runtime.edges.some((e) => key(charts.runtime, e.source) === "idle" && key(charts.runtime, e.target) === "busy" && e.event === "RUN"));
    assert.ok(charts.supervisor.edges.some((e) => e.event === "SHUTDOWN"));
  });

  it("serves the live page with elkjs, its layout library, from the daemon itself", async () => {
    const page = await d.get("/");
    assert.match(page.headers.get("content-security-policy") ?? "", /script-src 'self' 'unsafe-inline'/);
    assert.match(await page.text(), /<script src="\/assets\/elk\.bundled\.js"><\/script>/);
    const elk = await d.get("/assets/elk.bundled.js");
    assert.equal(elk.status, 200);
    assert.match(elk.headers.get("content-type") ?? "", /javascript/);
    assert.equal(await elk.text(), readFileSync(new URL("../node_modules/elkjs/lib/elk.bundled.js", import.meta.url), "utf8"));
    // (fetch would add "Cache-Control: no-cache" to a conditional request; a browser revalidating does not.)
    const again = await fetch(d.url + "/assets/elk.bundled.js", { headers: { "If-None-Match": elk.headers.get("etag")!, "Cache-Control": "max-age=0" } });
    assert.equal(again.status, 304, "a browser that has it keeps it");
  });
});
