import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type Router from "@koa/router";
import type { Context } from "koa";
import { chartOf } from "../../machines/chart.ts";
import { runtimeMachine } from "../../machines/runtimeMachine.ts";
import { supervisorMachine } from "../../machines/supervisorMachine.ts";
import type { RouteDeps } from "../runtime.ts";

const PAGE = readFileSync(new URL("../inspector/page.html", import.meta.url), "utf8");
const CHARTS = JSON.stringify({ supervisor: chartOf(supervisorMachine), runtime: chartOf(runtimeMachine) });
/** The graph layout library the page draws the charts with, served by the daemon itself (the page loads nothing else). */
const ELK = readFileSync(createRequire(import.meta.url).resolve("elkjs/lib/elk.bundled.js"));
const ELK_ETAG = `"${createHash("sha256").update(ELK).digest("base64url").slice(0, 27)}"`;

/** Scripts only from the daemon itself (elkjs) and the page's own inline script; requests only to the daemon. */
const CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

/**
 * GET / and /inspect: the live page of both state charts (self-contained, works offline); /machine.json: the
 * charts it draws, read from the machines' own definitions; /assets/elk.bundled.js: elkjs, which lays them out.
 */
export function inspectorRoutes(router: Router, _deps: RouteDeps): void {
  const page = (ctx: Context) => {
    ctx.type = "text/html; charset=utf-8";
    ctx.set("Content-Security-Policy", CSP);
    ctx.body = PAGE;
  };
  router.get("/", page);
  router.get("/inspect", page);
  router.get("/machine.json", (ctx) => {
    ctx.type = "application/json";
    ctx.body = CHARTS;
  });
  router.get("/assets/elk.bundled.js", (ctx) => {
    ctx.type = "text/javascript; charset=utf-8";
    ctx.set({ ETag: ELK_ETAG, "Cache-Control": "no-cache" });
    ctx.status = 200;
    if (ctx.fresh) {
      ctx.status = 304;
      return;
    }
    ctx.body = ELK;
  });
}
