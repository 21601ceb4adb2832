import type { Actor } from "xstate";
import type { Catalogue } from "../catalogue/index.ts";
import type { RuntimeFeed } from "../machines/feed.ts";
import type { SupervisorMachine } from "../machines/supervisorMachine.ts";
import type { DaemonMetrics } from "./metrics.ts";

/** What routes get: the running supervisor to send events to and read snapshots from, and fixed facts. */
export interface RouteDeps {
  supervisor: Actor<SupervisorMachine>;
  startedAt: number;
  /** Threads a model gets when its load does not say. */
  defaultThreads: number;
  /** State changes and resource samples as they happen (GET /events). */
  feed: RuntimeFeed;
  metrics: DaemonMetrics;
  /** --models-dir folders (empty: any path may be loaded). */
  modelsDirs: readonly string[];
  /** The models in the models directories (--models-dir, or the default one), by name. */
  catalogue: Catalogue;
  /** Whether the daemon is draining before it stops: it still serves, but says it is going. */
  draining: () => boolean;
}
