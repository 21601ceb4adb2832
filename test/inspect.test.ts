import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { WebSocketServer } from "ws";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { tinyModel } from "../testing/fixtures.ts";

// --inspect: the machine's events reach a WebSocket inspector (as Stately's tools receive them), sanitized.

describe("--inspect", () => {
  let server: WebSocketServer;
  let d: TestDaemon;
  const messages: Array<Record<string, any>> = [];
  const raw: string[] = [];

  before(async () => {
    server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise((r) => server.once("listening", r));
    server.on("connection", (socket) =>
      socket.on("message", (data) => {
        // A text frame, as a Buffer (ws's default binaryType).
        const text = (data as Buffer).toString();
        raw.push(text);
        messages.push(JSON.parse(text));
      }),
    );
    const { port } = server.address() as AddressInfo;
    d = await startTestDaemon({ inspectUrl: `ws://127.0.0.1:${port}` });
  });
  after(async () => {
    await d?.close();
    for (const client of server?.clients ?? []) client.terminate();
    await new Promise((r) => server?.close(r));
  });

  it("sends the machine's snapshots and events, without prompts or handles", async () => {
    await d.post("/load_model", { path: await tinyModel() });
    await d.post("/run_prompt", { prompt: "a very private prompt", raw: true, max_tokens: 3 });
    await waitUntil(() => messages.some((m) => m.type === "@xstate.snapshot" && m.snapshot?.value?.loaded === "idle" && m.snapshot?.context?.model === "kekahyde-char-tiny"), 10_000, "idle snapshot with the model");
    assert.ok(messages.some((m) => m.type === "@xstate.actor"), "the actor was announced");
    const generating = messages.find((m) => m.type === "@xstate.snapshot" && JSON.stringify(m.snapshot?.value) === '{"loaded":{"busy":"generating"}}');
    assert.ok(generating, "the generating state was reported");
    assert.ok(messages.some((m) => m.type === "@xstate.event" && m.event?.type === "RUN"));
    const all = raw.join("\n");
    assert.doesNotMatch(all, /very private prompt/);
    assert.doesNotMatch(all, /"ticket"/);
    assert.doesNotMatch(all, /_backendContextDisposeGuard|fullTensorInfo/, "no engine handles");
  });

  it("keeps serving when no inspector listens at the URL", async () => {
    const lonely = await startTestDaemon({ inspectUrl: "ws://127.0.0.1:9" });
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await lonely.status()).state, "empty");
    } finally {
      await lonely.close();
    }
  });
});
