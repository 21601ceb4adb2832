import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import type { Chart } from "../src/machines/chart.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { slowModel, tinyModel } from "../testing/fixtures.ts";

// The live state charts in a real browser: Debian's chromium driven by playwright-core. State ids come from
// /machine.json (the machines' own definitions), never from this file: the charts may be restructured.

const CHROMIUM = "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM}: install Debian's chromium (.ci/run does) to run this test`;

/** The id of the one state of the chart whose key is `key`. */
function idOf(chart: Chart, key: string): string {
  const found = chart.nodes.filter((n) => n.key === key);
  assert.equal(found.length, 1, `one state '${key}' in the ${chart.id} chart: ${chart.nodes.map((n) => n.id).join(", ")}`);
  return found[0].id;
}

/** The state and its ancestors, outermost first: what is active while it is. */
function pathTo(chart: Chart, id: string): string[] {
  const ids: string[] = [];
  for (let n = chart.nodes.find((x) => x.id === id); n; n = chart.nodes.find((x) => x.id === n.parent)) ids.unshift(n.id);
  return ids;
}

const sel = (id: string) => `[data-state-id="${id}"]`;
/** Waits until exactly these states of the chart are lit (the state, its compound parents, nothing else). */
async function waitLit(page: Page, chart: Chart, key: string): Promise<void> {
  const lit = pathTo(chart, idOf(chart, key));
  await page.waitForFunction(
    ({ chartId, lit }) => {
      const nodes = [...document.querySelectorAll(`#${chartId}-chart .node`)] as SVGGElement[];
      const on = nodes.filter((g) => g.classList.contains("active")).map((g) => g.dataset.stateId);
      return on.length === lit.length && lit.every((id) => on.includes(id));
    },
    { chartId: chart.id, lit },
    { timeout: 10_000 },
  ).catch(async (err) => {
    const on = await page.locator(`#${chart.id}-chart .node.active`).evaluateAll((gs) => gs.map((g) => (g as SVGGElement).dataset.stateId));
    throw new Error(`${chart.id}: waited for ${lit.join(", ")} to be lit, lit: ${on.join(", ")} (${(err as Error).message.split("\n")[0]})`);
  });
}

interface Box {
  what: string;
  chart: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Everything drawn, with its box on the screen, read from the DOM of the page. */
function readGeometry() {
  const box = (e: Element, what: string, chart: string) => {
    const r = e.getBoundingClientRect();
    return { what, chart, x: r.x, y: r.y, w: r.width, h: r.height };
  };
  const charts = [...document.querySelectorAll("svg.chart[data-chart]")] as SVGSVGElement[];
  return {
    // What shows of each chart: its box, which scrolls when the chart is wider than the room there is.
    charts: charts.map((svg) => ({ ...box(svg.parentElement!, svg.dataset.chart!, svg.dataset.chart!), scale: svg.getBoundingClientRect().width / svg.viewBox.baseVal.width })),
    aside: box(document.querySelector("aside")!, "aside", ""),
    states: charts.flatMap((svg) => [...svg.querySelectorAll(".node")].map((g) => ({ ...box(g.querySelector("rect.box")!, (g as SVGGElement).dataset.stateId!, svg.dataset.chart!) }))),
    pseudo: charts.flatMap((svg) =>
      [...svg.querySelectorAll(".pseudo")].map((g, i) => ({ ...box(g.firstElementChild!, `${g.getAttribute("class")} #${i}`, svg.dataset.chart!), parent: (g as SVGGElement).dataset.parent || null })),
    ),
    texts: charts.flatMap((svg) =>
      [...svg.querySelectorAll(".node text, .pseudo text")].map((t) => ({ ...box(t, `text '${t.textContent}'`, svg.dataset.chart!), owner: (t.parentElement as unknown as SVGGElement).dataset.stateId ?? null })),
    ),
    labels: charts.flatMap((svg) =>
      [...svg.querySelectorAll(".edge .label rect")].map((r) => {
        const g = r.closest(".edge") as SVGGElement;
        return { ...box(r, `label '${r.parentElement!.textContent}' (${g.dataset.source} → ${g.dataset.target})`, svg.dataset.chart!), text: box(r.nextElementSibling!, "", "") };
      }),
    ),
    edges: charts.flatMap((svg) => [...svg.querySelectorAll(".edge")].map((g) => ({ chart: svg.dataset.chart!, source: (g as SVGGElement).dataset.source!, target: (g as SVGGElement).dataset.target!, events: (g as SVGGElement).dataset.events!.split(" "), paths: g.querySelectorAll("path").length }))),
  };
}

const EPS = 0.5;
/** Closer than 2 px counts as on top: things drawn touching each other are as unreadable as overlapping ones. */
const GAP = 2;
const overlap = (a: Box, b: Box) => Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) > -GAP && Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) > -GAP;
const inside = (a: Box, outer: Box) => a.x >= outer.x - EPS && a.y >= outer.y - EPS && a.x + a.w <= outer.x + outer.w + EPS && a.y + a.h <= outer.y + outer.h + EPS;

/** What overlaps what it should not, as sentences (empty when the drawing is clean). */
function overlaps(geo: ReturnType<typeof readGeometry>, charts: Record<string, Chart>): string[] {
  const bad: string[] = [];
  // A state's ancestors; the initial dot of a compound state is inside it, as a state would be.
  const chains = new Map<Box, string[]>();
  for (const s of geo.states) chains.set(s, pathTo(charts[s.chart], s.what).slice(0, -1));
  for (const p of geo.pseudo) chains.set(p, p.parent ? pathTo(charts[p.chart], p.parent) : []);
  const ancestors = (chart: string, id: string) => pathTo(charts[chart], id).slice(0, -1);
  // Charts: side by side with nothing, beside the status panel, inside the window.
  for (const [i, a] of geo.charts.entries()) {
    if (overlap(a, geo.aside)) bad.push(`the ${a.what} chart runs under the status panel`);
    if (a.x + a.w > 1400 + EPS) bad.push(`the ${a.what} chart is wider than the window`);
    for (const b of geo.charts.slice(i + 1)) if (overlap(a, b)) bad.push(`the ${a.what} and ${b.what} charts overlap`);
  }
  // State boxes: apart, unless one is the other's ancestor, and then it contains it.
  const boxes = [...geo.states, ...geo.pseudo];
  for (const [i, a] of boxes.entries()) {
    for (const b of boxes.slice(i + 1)) {
      if (a.chart !== b.chart) continue;
      const aInB = chains.get(a)!.includes(b.what);
      const bInA = chains.get(b)!.includes(a.what);
      if (aInB && !inside(a, b)) bad.push(`${a.what} sticks out of its parent ${b.what}`);
      else if (bInA && !inside(b, a)) bad.push(`${b.what} sticks out of its parent ${a.what}`);
      else if (!aInB && !bInA && overlap(a, b)) bad.push(`${a.what} overlaps ${b.what}`);
    }
  }
  // A state's own text lies inside its box and on no other state box but its ancestors'.
  for (const t of geo.texts) {
    const own = t.owner === null ? null : geo.states.find((s) => s.chart === t.chart && s.what === t.owner)!;
    if (own && !inside(t, own)) bad.push(`${t.what} sticks out of ${own.what}`);
    for (const s of boxes) {
      if (s.chart !== t.chart || s === own || (own && ancestors(t.chart, own.what).includes(s.what))) continue;
      if (overlap(t, s) && !(t.owner === null && inside(t, s))) bad.push(`${t.what} overlaps ${s.what}`);
    }
  }
  // Edge labels: their text inside their box; apart from each other, from every state's text, and off every
  // state box they are not inside of.
  for (const [i, l] of geo.labels.entries()) {
    if (!inside(l.text, l)) bad.push(`${l.what}: the text sticks out of its box`);
    for (const m of geo.labels.slice(i + 1)) if (l.chart === m.chart && overlap(l, m)) bad.push(`${l.what} overlaps ${m.what}`);
    for (const s of boxes) if (s.chart === l.chart && overlap(l, s) && !inside(l, s)) bad.push(`${l.what} overlaps ${s.what}`);
    for (const t of geo.texts) if (t.chart === l.chart && overlap(l, t)) bad.push(`${l.what} overlaps ${t.what}`);
  }
  return bad;
}

/** A chart written out by hand: states by path ("loaded.busy.generating"), transitions between paths. */
function chartFrom(id: string, states: string[], edges: Array<[string, string, string, string?]>, invokes: Record<string, string[]> = {}): Chart {
  const full = (path: string) => `${id}.${path}`;
  const parentOf = (path: string) => (path.includes(".") ? full(path.slice(0, path.lastIndexOf("."))) : null);
  const childrenOf = (path: string) => states.filter((s) => parentOf(s) === full(path));
  return {
    id,
    initial: full(states[0]),
    nodes: states.map((s) => ({
      id: full(s),
      key: s.split(".").at(-1)!,
      parent: parentOf(s),
      type: childrenOf(s).length ? "compound" : s.endsWith("stopped") ? "final" : "atomic",
      initial: childrenOf(s)[0] ? full(childrenOf(s)[0]) : null,
      invokes: invokes[s] ?? [],
    })),
    edges: edges.map(([source, target, event, guard]) => ({ source: full(source), target: full(target), event, guard: guard ?? null })),
  };
}

/**
 * Charts shaped as the machines are being restructured, with what the drawing must also cope with: three
 * levels, a transition into a compound's own child, one back to its own state, one from every top-level state.
 */
const RESTRUCTURED = {
  supervisor: chartFrom(
    "supervisor",
    ["serving", "serving.ready", "serving.admitting", "serving.placing", "serving.evicting", "stopping", "stopped"],
    [
      ["serving", "stopping", "SHUTDOWN"],
      ["serving.ready", "serving.admitting", "LOAD"],
      ["serving.ready", "serving.admitting", "always", "hasWaitingLoads"],
      ["serving.admitting", "serving.placing", "xstate.done.actor.admission"],
      ["serving.admitting", "serving.ready", "xstate.error.actor.admission"],
      ["serving.placing", "serving.evicting", "always", "needsRoom"],
      ["serving.placing", "serving.ready", "always", "fits"],
      ["serving.evicting", "serving.ready", "MODEL.PHASE", "allRetired"],
      ["serving.ready", "serving.ready", "MODEL.PHASE"],
      ["stopping", "stopped", "always", "allStopped"],
    ],
    { "serving.admitting": ["admitModel"] },
  ),
  runtime: chartFrom(
    "runtime",
    ["empty", "loading", "loaded", "loaded.idle", "loaded.busy", "loaded.busy.generating", "loaded.busy.cancelling", "unloading", "stopping", "stopped"],
    [
      ...["empty", "loading", "loaded", "unloading"].map((s): [string, string, string] => [s, "stopping", "SHUTDOWN"]),
      ["empty", "loading", "LOAD"],
      ["loading", "loaded", "LOAD.DONE"],
      ["loading", "empty", "LOAD.FAILED"],
      ["loaded", "loading", "LOAD", "isIdle"],
      ["loaded", "loaded.idle", "KEEPALIVE"],
      ["loaded.idle", "loaded.busy", "RUN"],
      ["loaded.idle", "unloading", "UNLOAD"],
      ["loaded.busy", "loaded.idle", "always", "nothingRunning"],
      ["loaded.busy.generating", "loaded.busy.cancelling", "STOP"],
      ["loaded.busy.cancelling", "loaded.busy.generating", "always", "nothingRunning"],
      ["loaded.busy.generating", "unloading", "JOB.FAILED", "isEngineFailure"],
      ["loaded.busy.cancelling", "unloading", "JOB.FAILED", "isEngineFailure"],
      ["unloading", "empty", "xstate.done.actor.disposer"],
      ["stopping", "stopped", "xstate.done.actor.disposer"],
    ],
    { loading: ["loadModel"], unloading: ["disposeModel"], stopping: ["disposeModel"] },
  ),
};

describe("the inspector page in Chromium", { skip }, () => {
  let d: TestDaemon;
  let browser: Browser;
  let charts: { supervisor: Chart; runtime: Chart };
  before(async () => {
    d = await startTestDaemon({ maxModels: 2 });
    charts = (await (await d.get("/machine.json")).json()) as typeof charts;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });
  after(async () => {
    await browser?.close();
    await d?.close();
  });

  const open = async (path: string, setUp?: (page: Page) => Promise<unknown>) => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    await setUp?.(page);
    // tsx compiles this file keeping function names (`__name(fn, "box")`); functions handed to the page need it.
    await page.addInitScript("globalThis.__name = (f) => f");
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    // Failed requests are told by their responses (a browser asks for /favicon.ico, which the daemon has not).
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${r.status()} ${r.url()}`);
    });
    await page.goto(d.url + path);
    await page.waitForSelector("#supervisor-chart[data-ready] .node");
    await page.waitForSelector("#runtime-chart[data-ready] .node");
    return { page, errors };
  };

  /** Every state and transition of the charts drawn, readable, nothing on top of anything else. */
  async function checkLayout(page: Page, charts: { supervisor: Chart; runtime: Chart }): Promise<void> {
    for (const chart of [charts.supervisor, charts.runtime]) {
      for (const n of chart.nodes) assert.equal(await page.locator(`#${chart.id}-chart ${sel(n.id)}`).count(), 1, `${n.id} is drawn in the ${chart.id} chart`);
    }
    const geo = await page.evaluate(readGeometry);
    // Every transition of the definition is drawn: as an edge from its state, from a compound state around it
    // (when all the compound's states have it), or from an "any state" box (when every top-level state has it).
    for (const chart of [charts.supervisor, charts.runtime]) {
      const drawn = geo.edges.filter((e) => e.chart === chart.id);
      for (const e of chart.edges) {
        const from = [...pathTo(chart, e.source), `any:${e.target}`];
        assert.ok(drawn.some((x) => x.target === e.target && x.events.includes(e.event) && from.includes(x.source)), `${e.source} → ${e.target} (${e.event}) is drawn`);
      }
      assert.ok(drawn.every((x) => x.paths > 0), "every edge has a route");
    }
    assert.ok(geo.labels.length >= 5, "the edges carry their events");
    for (const c of geo.charts) assert.ok(c.scale >= 0.7, `the ${c.what} chart is drawn at a readable scale (${c.scale.toFixed(2)})`);
    assert.deepEqual(overlaps(geo, charts), []);
  }

  it("lays both charts out with elkjs: at 1400x800 no state, label or text overlaps another", async () => {
    const { page, errors } = await open("/");
    await page.screenshot({ path: "test/.fixtures/inspector.png" });
    await checkLayout(page, charts);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it("draws whatever the chart JSON says: restructured charts are laid out as cleanly", async () => {
    const { page, errors } = await open("/", (p) => p.route("**/machine.json", (r) => r.fulfill({ contentType: "application/json", body: JSON.stringify(RESTRUCTURED) })));
    await page.screenshot({ path: "test/.fixtures/inspector-restructured.png" });
    await checkLayout(page, RESTRUCTURED);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it("draws the charts from the machines' definitions and follows the live states", async () => {
    const { page, errors } = await open("/");
    const rt = charts.runtime;
    const node = (id: string) => page.locator(`#runtime-chart ${sel(id)}`);
    // No model: the runtime chart shows where a runtime starts; the supervisor serves.
    await waitLit(page, rt, "empty");
    await waitLit(page, charts.supervisor, "ready");
    assert.equal(await page.locator("#tabs button").count(), 0, "no model to pick");

    assert.equal((await d.post("/load_model", { path: await slowModel() })).status, 200);
    const slow = (await d.status()).models[0].name as string;
    await waitLit(page, rt, "idle");
    assert.doesNotMatch((await node(idOf(rt, "empty")).getAttribute("class")) ?? "", /active/);
    await page.waitForSelector(`#tabs button[data-model="${slow}"][aria-selected="true"]`);

    const running = d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5000 });
    await waitLit(page, rt, "generating");
    const parents = pathTo(rt, idOf(rt, "generating")).slice(0, -1);
    assert.ok(parents.length > 0, "generating is inside a compound state");
    for (const id of parents) assert.match((await node(id).getAttribute("class")) ?? "", /active/, `the compound parent ${id} is active too`);
    await page.waitForFunction(() => document.getElementById("state")?.textContent === "generating");
    await page.screenshot({ path: "test/.fixtures/inspector-generating.png" });

    // A second model: the chart follows the default (newest) one, or the one picked.
    assert.equal((await d.post("/load_model", { path: await tinyModel() })).status, 200);
    const tiny = ((await d.status()).models as Array<{ name: string }>).map((m) => m.name).find((n) => n !== slow)!;
    await page.waitForSelector(`#tabs button[data-model="${tiny}"][aria-selected="true"]`);
    await waitLit(page, rt, "idle");
    await page.click(`#tabs button[data-model="${slow}"]`);
    await waitLit(page, rt, "generating");
    assert.equal(await page.locator(`#tabs button[data-model="${slow}"]`).getAttribute("aria-selected"), "true");

    await d.post("/stop", { model: slow });
    await running;
    await waitLit(page, rt, "idle");
    await waitLit(page, charts.supervisor, "ready");
    const log = await page.locator("#log li").allTextContents();
    assert.ok(log.some((l) => /generating → cancelling\s+\(STOP\)/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /cancelling → idle/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /idle → generating\s+\(RUN\)/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /supervisor: \S+ → \S+\s+\(LOAD\)/.test(l)), `the supervisor's transitions are logged:\n${log.join("\n")}`);
    const defaultName = (await d.status()).model?.name as string;
    await page.waitForFunction((name) => document.getElementById("model")?.textContent === name, defaultName);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it("works offline: the page loads nothing but the daemon's own routes", async () => {
    if (!(await d.status()).models.length) await d.post("/load_model", { path: await tinyModel() });
    const foreign: string[] = [];
    const own: string[] = [];
    const { page, errors } = await open("/inspect", (p) => Promise.resolve(p.on("request", (r) => (r.url().startsWith(d.url) ? own : foreign).push(r.url()))));
    // Opened with a model loaded: /events' first snapshot lights its state at once (`models_active`).
    await waitLit(page, charts.runtime, "idle");
    await waitLit(page, charts.supervisor, "ready");
    assert.equal((await d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 3 })).status, 200);
    await page.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => /\(RUN\)/.test(li.textContent ?? "")));
    assert.deepEqual(foreign, []);
    assert.ok(own.includes(d.url + "/assets/elk.bundled.js"), "the layout library comes from the daemon");
    assert.deepEqual(errors, []);
    await page.close();
  });
});
