import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser } from "playwright-core";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { slowModel, tinyModel } from "./helpers/fixtures.ts";

// The live state chart in a real browser: Debian's chromium driven by playwright-core.

const CHROMIUM = "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `no browser at ${CHROMIUM}: install Debian's chromium (.ci/run does) to run this test`;

describe("the inspector page in Chromium", { skip }, () => {
  let d: TestDaemon;
  let browser: Browser;
  before(async () => {
    d = await startTestDaemon();
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

  it("draws the chart from the machine's definition and follows the live state", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(d.url + "/");
    const node = (id: string) => page.locator(`[data-state-id="runtime.${id}"]`);
    for (const id of ["empty", "loading", "idle", "busy", "busy.generating", "busy.cancelling", "stopping", "stopped"]) {
      assert.equal(await node(id).count(), 1, `${id} is drawn`);
    }
    await page.waitForSelector('[data-state-id="runtime.empty"].active');

    assert.equal((await d.post("/load_model", { path: await slowModel() })).status, 200);
    await page.waitForSelector('[data-state-id="runtime.idle"].active');
    assert.equal(await node("empty").getAttribute("class"), "node");

    const running = d.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 5000 });
    await page.waitForSelector('[data-state-id="runtime.busy.generating"].active');
    assert.match((await node("busy").getAttribute("class")) ?? "", /active/, "the compound parent is active too");
    await page.waitForFunction(() => document.getElementById("state")?.textContent === "generating");

    await d.post("/stop");
    await running;
    await page.waitForSelector('[data-state-id="runtime.idle"].active');
    const log = await page.locator("#log li").allTextContents();
    assert.ok(log.some((l) => /generating → cancelling\s+\(STOP\)/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /cancelling → idle/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => /idle → generating\s+\(RUN\)/.test(l)), log.join("\n"));
    assert.equal((await page.locator("#model").textContent())?.trim(), "kekahyde-char-slow");
    assert.deepEqual(errors, []);
    await page.screenshot({ path: "test/.fixtures/inspector.png" });
    await page.close();
  });

  it("works offline: the page loads nothing but the daemon's own routes", async () => {
    const page = await browser.newPage();
    const foreign: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(d.url)) foreign.push(r.url());
    });
    await page.goto(d.url + "/inspect");
    await page.waitForSelector(".node.active");
    assert.deepEqual(foreign, []);
    await d.post("/load_model", { path: await tinyModel() });
    await page.close();
  });
});
