import { readFileSync } from "node:fs";
import type Router from "@koa/router";
import { chartOf } from "../../machines/chart.ts";
import { runtimeMachine } from "../../machines/runtimeMachine.ts";
import type { RouteDeps } from "../runtime.ts";

const PAGE = readFileSync(new URL("../inspector/page.html", import.meta.url), "utf8");
const CHART = JSON.stringify(chartOf(runtimeMachine));

/** GET / and /inspect: the live state chart page (self-contained, works offline); /machine.json: the chart. */
export function inspectorRoutes(router: Router, _deps: RouteDeps): void {
  const page = (ctx: { type: string; body: unknown; set: (k: string, v: string) => void }) => {
    ctx.type = "text/html; charset=utf-8";
    ctx.set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
    ctx.body = PAGE;
  };
  router.get("/", page);
  router.get("/inspect", page);
  router.get("/machine.json", (ctx) => {
    ctx.type = "application/json";
    ctx.body = CHART;
  });
}
