import type { InspectionEvent, Observer } from "xstate";
import type { RuntimeContext } from "./runtimeMachine.ts";

/**
 * `--inspect ws://…`: sends the machine's inspection events to a Stately inspector over WebSocket, for people
 * who use Stately's tools. Off by default; only the URL given receives anything. The context is reduced to
 * plain, small facts: no engine handles, no tickets, no prompts.
 */
export async function statelyInspector(url: string): Promise<{ observe(e: InspectionEvent): void; stop(): void }> {
  const { createWebSocketInspector } = await import("@statelyai/inspect");
  const inspector = createWebSocketInspector({
    url,
    sanitizeContext: (context) => {
      const c = context as Partial<RuntimeContext>;
      if (!("queue" in c)) return {};
      return {
        model: c.model?.info.name ?? null,
        loading: c.load?.path ?? null,
        queue_length: c.queue?.length ?? 0,
        generation: c.generation ?? null,
        last_error: c.lastError ?? null,
      };
    },
  });
  inspector.start();
  const observer = inspector.inspect as Observer<InspectionEvent>;
  return { observe: (e) => observer.next?.(e), stop: () => inspector.stop() };
}
