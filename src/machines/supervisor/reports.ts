import type { ModelPhaseEvent } from "../runtime/types.ts";
import { ENGINE_LOSSES } from "../../errors.ts";
import { departingOf, entryOf } from "./queries.ts";
import type { SupervisorContext } from "./types.ts";

/**
 * What a runtime's MODEL.PHASE report means to the supervisor: exactly one of these, decided in one place,
 * so that each of the chart's MODEL.PHASE branches tests one meaning and no branch depends on the order
 * they are tried in (test/supervisor.reports.test.ts states it for random contexts and reports).
 */
export type ReportMeaning =
  /** A model that left the set reports its memory free (`empty`) or that it stopped: it is forgotten. */
  | "departed"
  /** A model that left the set reports anything else: nothing to do yet. */
  | "departing"
  /** A runtime just spawned reports its initial `empty`, before its load starts: not a failure. */
  | "fresh"
  /** A model reports idle and its keep-alive is 0: it is unloaded at once. */
  | "idleUnloadAtOnce"
  /** A model reports idle and its keep-alive is negative: it stays loaded. */
  | "idleKeptForever"
  /** A model reports idle: its keep-alive timer starts. */
  | "idle"
  /** A loaded model reports `empty` because its engine was lost (crashed, or stopped for a time limit). */
  | "engineLoss"
  /** A loaded model reports `empty` for any other reason: its load failed, or its engine failed. */
  | "empty"
  /** A busy model reports `loading` after losing its engine: its runtime loads it again. */
  | "reloadAfterLoss"
  /** A loaded model reports it is loading, working, unloading or stopping. */
  | "work"
  /** The report of a runtime the supervisor no longer knows (neither loaded nor departing). */
  | "unknown";

export const REPORT_MEANINGS: readonly ReportMeaning[] = ["departed", "departing", "fresh", "idleUnloadAtOnce", "idleKeptForever", "idle", "engineLoss", "empty", "reloadAfterLoss", "work", "unknown"];

const isEngineLoss = (error: ModelPhaseEvent["error"]): boolean => error !== null && ENGINE_LOSSES.has(error.code);

export function classifyReport(context: SupervisorContext, report: ModelPhaseEvent): ReportMeaning {
  if (departingOf(context, report.ref)) return report.phase === "empty" || report.phase === "stopped" ? "departed" : "departing";
  const entry = entryOf(context, report.ref);
  if (!entry) return "unknown";
  switch (report.phase) {
    case "empty":
      if (entry.phase === "new") return "fresh";
      return isEngineLoss(report.error) ? "engineLoss" : "empty";
    case "idle":
      if (entry.keepAliveMs === 0) return "idleUnloadAtOnce";
      return entry.keepAliveMs < 0 ? "idleKeptForever" : "idle";
    case "loading":
      return entry.phase === "busy" && isEngineLoss(report.error) ? "reloadAfterLoss" : "work";
    default:
      return "work";
  }
}
