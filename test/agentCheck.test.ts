import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { MAX_AGENT_LINE_BYTES, readAgentLine, startAgentCheck, type AgentCheck, type AgentLineRead, type DaemonLoad } from "../src/fleet/agentCheck.ts";

// The agent's connections are bounded: one line of at most MAX_AGENT_LINE_BYTES is read, answered, and the
// connection closed, whatever the peer goes on sending. (test/fleet.test.ts tests the answers themselves.)

const load = (over: Partial<DaemonLoad> = {}): DaemonLoad => ({ draining: false, slots: 2, freeSlots: 1, queued: 0, maxQueue: 4, ...over });

describe("the agent reads one bounded line", () => {
  it("reads a line across chunks, up to its newline, and nothing after it", () => {
    const first = readAgentLine("", Buffer.from("tin"));
    assert.deepEqual(first, { kind: "partial", text: "tin" });
    assert.deepEqual(readAgentLine("tin", Buffer.from("y:latest\r\nand more\n")), { kind: "line", line: "tiny:latest\r" });
    assert.deepEqual(readAgentLine("", Buffer.from("\n")), { kind: "line", line: "" });
  });

  it("keeps at most MAX_AGENT_LINE_BYTES of 1 MB sent without a newline, and says it is too long", () => {
    const chunk = Buffer.alloc(64 * 1024, "x");
    let sofar = "";
    let read: AgentLineRead = { kind: "partial", text: "" };
    for (let sent = 0; sent < 1 << 20 && read.kind === "partial"; sent += 100) {
      read = readAgentLine(sofar, chunk.subarray(0, 100));
      if (read.kind === "partial") sofar = read.text;
      assert.ok(sofar.length <= MAX_AGENT_LINE_BYTES, `holds ${sofar.length} bytes`);
    }
    assert.equal(read.kind, "too long");
    assert.equal(readAgentLine("", chunk).kind, "too long", "one big chunk at once");
    assert.deepEqual(readAgentLine("", Buffer.from("x".repeat(MAX_AGENT_LINE_BYTES) + "\n")), { kind: "line", line: "x".repeat(MAX_AGENT_LINE_BYTES) });
  });
});

/** A peer that keeps its side open (as `nc` does) and keeps sending, for up to `forMs`; resolves on its close. */
function floodAgent(port: number, first: string, forMs: number): Promise<{ closedAfterMs: number | null; received: string; sent: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket: Socket = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const junk = Buffer.alloc(64 * 1024, "x");
    let received = "";
    let sent = 0;
    let closed = false;
    socket.on("data", (d) => (received += String(d)));
    socket.on("error", () => {});
    const send = () => {
      if (closed) return;
      if (performance.now() - started > forMs) return void socket.destroy();
      if (socket.writable) {
        socket.write(junk);
        sent += junk.length;
      }
      setTimeout(send, 10);
    };
    socket.once("connect", () => {
      socket.write(first);
      send();
    });
    socket.once("close", () => {
      closed = true;
      const ms = performance.now() - started;
      resolve({ closedAfterMs: ms < forMs ? ms : null, received, sent });
    });
  });
}

describe("the agent closes connections that do not behave", () => {
  let agent: AgentCheck;
  const asked: Array<string | undefined> = [];
  before(async () => {
    agent = await startAgentCheck({
      host: "127.0.0.1",
      port: 0,
      load: (model) => {
        asked.push(model);
        return load();
      },
    });
  });
  after(() => agent?.close());

  it("closes, unanswered, a connection that sends 1 MB and more without a newline", { timeout: 10_000 }, async () => {
    asked.length = 0;
    const r = await floodAgent(agent.port, "", 4_000);
    assert.ok(r.closedAfterMs !== null && r.closedAfterMs < 2_000, `closed after ${r.closedAfterMs} ms, ${r.sent} bytes sent`);
    assert.equal(r.received, "", "no answer for a line that is no agent-send");
    assert.deepEqual(asked, [], "the load was never asked for");
  });

  it("answers a line and closes, though the peer goes on sending", { timeout: 10_000 }, async () => {
    asked.length = 0;
    const r = await floodAgent(agent.port, "tiny\n", 4_000);
    assert.equal(r.received, "ready up 50%\n");
    assert.ok(r.closedAfterMs !== null && r.closedAfterMs < 2_000, `closed after ${r.closedAfterMs} ms, ${r.sent} bytes sent`);
    assert.deepEqual(asked, ["tiny"]);
  });

  it("answers a peer that sends nothing for the whole daemon, and closes though the peer keeps its side open", { timeout: 10_000 }, async () => {
    asked.length = 0;
    const r = await new Promise<{ text: string; ms: number }>((resolve) => {
      const started = performance.now();
      const socket = connect({ port: agent.port, host: "127.0.0.1", allowHalfOpen: true });
      let text = "";
      socket.on("data", (d) => (text += String(d)));
      socket.on("error", () => {});
      // Only after the answer does the peer write again: a byte now and then, which fails once the agent has closed.
      const poke = () => {
        if (socket.destroyed) return;
        if (performance.now() - started > 4_000) return void socket.destroy();
        socket.write("x");
        setTimeout(poke, 50);
      };
      socket.once("end", poke);
      socket.once("close", () => resolve({ text, ms: performance.now() - started }));
    });
    assert.equal(r.text, "ready up 50%\n");
    assert.ok(r.ms < 2_000, `closed after ${r.ms} ms`);
    assert.deepEqual(asked, [undefined]);
  });
});
