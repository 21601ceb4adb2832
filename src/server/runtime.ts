import type { Actor } from "xstate";
import type { RuntimeFeed } from "../machines/feed.ts";
import type { RuntimeMachine } from "../machines/runtimeMachine.ts";
import type { DaemonMetrics } from "./metrics.ts";

/** What routes get: the running machine to send events to and read snapshots from, and fixed facts. */
export interface RouteDeps {
  runtime: Actor<RuntimeMachine>;
  startedAt: number;
  /** Threads a model gets when its load does not say. */
  defaultThreads: number;
  /** State changes and resource samples as they happen (GET /events). */
  feed: RuntimeFeed;
  metrics: DaemonMetrics;
}
