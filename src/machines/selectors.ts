import type { SnapshotFrom } from "xstate";
import type { RuntimeMachine } from "./runtimeMachine.ts";
import { defaultModel, type SupervisorMachine } from "./supervisorMachine.ts";

export type RuntimeSnapshot = SnapshotFrom<RuntimeMachine>;
export type SupervisorSnapshot = SnapshotFrom<SupervisorMachine>;
export type RuntimeStateName = "empty" | "loading" | "replacing" | "idle" | "generating" | "cancelling" | "unloading" | "stopping" | "stopped";

/** The state a user sees: the innermost active state (`busy.generating` reads as `generating`). */
export function stateName(snapshot: RuntimeSnapshot): RuntimeStateName {
  let value: unknown = snapshot.value;
  while (value && typeof value === "object") value = Object.values(value)[0];
  return value as RuntimeStateName;
}

/** The default model's runtime snapshot, or null when no model is loaded. */
export function defaultRuntime(snapshot: SupervisorSnapshot): RuntimeSnapshot | null {
  return defaultModel(snapshot.context)?.ref.getSnapshot() ?? null;
}
