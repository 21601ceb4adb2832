import type { Actor } from "xstate";
import type { RuntimeMachine } from "../machines/runtimeMachine.ts";

/** What routes get: the running machine to send events to and read snapshots from, nothing else. */
export interface RouteDeps {
  runtime: Actor<RuntimeMachine>;
  startedAt: number;
}
