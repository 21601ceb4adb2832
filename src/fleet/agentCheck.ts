import { createServer, type Socket } from "node:net";
import { canonicalModelName } from "../catalogue/names.ts";

/**
 * HAProxy's agent protocol (its configuration manual, `agent-check`): HAProxy connects to a TCP port, may
 * send a line (`agent-send`), reads one line and closes. The line says what the load balancer should do with
 * this daemon: `drain` (no new request, those running finish), or `up` with a weight in percent of the
 * server's configured weight, so that the daemon with the most free slots gets the next request. `ready`
 * comes with every `up`: it cancels a drain the agent asked for earlier (a daemon restarted on the same port
 * is taken back).
 *
 * This is the daemon's side only: no cluster code, HAProxy does the balancing.
 */

/** How loaded a daemon is, as the agent reports it. */
export interface DaemonLoad {
  /** Shutting down: finish what runs, take nothing new. */
  draining: boolean;
  /** Generations the daemon can run at once: the sum of `--parallel` over its loaded models, 1 when none is. */
  slots: number;
  /** Slots free now (slots minus running generations). */
  freeSlots: number;
  /** Requests waiting for a slot (reported, not weighed: with no free slot the weight is 0 anyway). */
  queued: number;
  /** Requests that may wait per model (`--max-queue`); 0: none wait, a busy daemon answers 503. */
  maxQueue: number;
}

/**
 * The agent's answer for a load, one line: `drain`, or `ready up N%`, N being the share of the slots that are
 * free (at least 1% while one is). No free slot: `ready up 0%`. A server of weight 0 is up but gets no new
 * request while another server of its backend has weight; when none has, HAProxy uses the backend's
 * overflow lines (the same daemons, `backup`, unweighted), so requests then wait in the daemons' queues
 * (or get the daemon's own 503 when every queue is full) instead of HAProxy refusing them.
 */
export function agentReply(load: DaemonLoad): string {
  if (load.draining) return "drain\n";
  const slots = Math.max(1, Math.floor(load.slots));
  const free = Math.min(slots, Math.max(0, Math.floor(load.freeSlots)));
  const percent = free === 0 ? 0 : Math.max(1, Math.round((100 * free) / slots));
  return `ready up ${percent}%\n`;
}

export interface AgentCheck {
  /** The port it listens on (the one asked for, or the one picked for port 0). */
  port: number;
  close(): Promise<void>;
}

/**
 * How long the agent waits for a line before it answers for the whole daemon. The generated config always
 * sends one (a model's name, or an empty line for the whole daemon), so this only delays other callers.
 */
const REQUEST_WAIT_MS = 500;

/**
 * The longest line the agent reads: HAProxy sends at most its `agent-send` string (here a model name of up to
 * 128 characters and a newline). A connection that sends more without a newline is no agent check: it is
 * closed unanswered, so that what a connection can make the daemon hold is this many bytes.
 */
export const MAX_AGENT_LINE_BYTES = 256;

/**
 * The longest a connection lives, whatever it does: it is answered within REQUEST_WAIT_MS and closed once the
 * answer is written, so only a peer that never takes the answer gets this far.
 */
const CONNECTION_DEADLINE_MS = 5_000;

/** What the agent has read of a connection's line after one more chunk. */
export type AgentLineRead = { kind: "line"; line: string } | { kind: "partial"; text: string } | { kind: "too long" };

/**
 * Reads the next chunk of a connection's first line onto `sofar` (what came before, without a newline).
 * Only the chunk is searched for the newline, and nothing past it or past MAX_AGENT_LINE_BYTES is kept: the
 * work and the memory per connection are bounded, whatever the peer sends.
 */
export function readAgentLine(sofar: string, chunk: Buffer): AgentLineRead {
  const newline = chunk.indexOf(0x0a);
  const piece = newline < 0 ? chunk : chunk.subarray(0, newline);
  if (sofar.length + piece.length > MAX_AGENT_LINE_BYTES) return { kind: "too long" };
  const text = sofar + piece.toString("latin1");
  return newline < 0 ? { kind: "partial", text } : { kind: "line", line: text };
}

/** The model a line names, if it is a model name (HAProxy sends `<name>\n`, or `\r\n` by hand). */
function modelOf(line: string): string | undefined {
  const model = line.trim();
  return /^[A-Za-z0-9._:@/-]{1,128}$/.test(model) ? model : undefined;
}

/**
 * One agent connection: read one bounded line (or wait REQUEST_WAIT_MS, or take what came before the peer
 * ended), answer it, close. Everything the peer sends after its line is ignored, and the socket is destroyed
 * once the answer is written: a peer that keeps sending is not read on.
 */
function serveAgentConnection(socket: Socket, load: (model?: string) => DaemonLoad): void {
  let sofar = "";
  let answered = false;
  const answer = (line: string) => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    let reply: string;
    try {
      reply = agentReply(load(modelOf(line)));
    } catch {
      socket.destroy();
      return;
    }
    // Destroyed once written, not merely ended: a peer that does not end its side would keep it open.
    socket.end(reply, () => socket.destroy());
  };
  // setImmediate: a line that arrived while the event loop was busy is read before the timer answers without it.
  const timer = setTimeout(() => setImmediate(() => answer(sofar)), REQUEST_WAIT_MS);
  const deadline = setTimeout(() => socket.destroy(), CONNECTION_DEADLINE_MS);
  socket.once("close", () => {
    clearTimeout(timer);
    clearTimeout(deadline);
  });
  socket.on("error", () => socket.destroy());
  socket.on("data", (chunk: Buffer) => {
    if (answered) return;
    const read = readAgentLine(sofar, chunk);
    if (read.kind === "too long") socket.destroy();
    else if (read.kind === "line") answer(read.line);
    else sofar = read.text;
  });
  socket.once("end", () => answer(sofar));
}

/**
 * Starts the TCP responder for HAProxy's `agent-check`. HAProxy may first send a line (`agent-send`): the
 * generated config sends the model name of the backend the server line is in, so that a daemon full for
 * one model but free for another is weighed for the model HAProxy is routing (an empty line: the whole
 * daemon). `load(model)` is called per connection (so the answer is as fresh as the daemon's own state),
 * with that name, or without one when the line is empty or nothing arrives within 500 ms. If `load` throws,
 * the agent closes without a word (HAProxy then leaves the server as its health check says). A connection
 * that sends more than MAX_AGENT_LINE_BYTES without a newline is closed without a word too.
 */
export function startAgentCheck(options: { host: string; port: number; load: (model?: string) => DaemonLoad }): Promise<AgentCheck> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    serveAgentConnection(socket, options.load);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : options.port;
      let closing: Promise<void> | null = null;
      resolve({
        port,
        close: () =>
          (closing ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const socket of sockets) socket.destroy();
          })),
      });
    });
  });
}

/**
 * The load of a daemon from the models its `/status` lists (`models[]`: `name`, `parallel`, `running`,
 * `queue_length`), for the daemon to feed `startAgentCheck` from its own snapshot without this module knowing
 * the machines. With `model` (the name HAProxy sent) and that model loaded: that model's slots and queue
 * only. Otherwise the whole daemon's; no model loaded: one free slot (a request would load one).
 */
export function daemonLoad(
  models: ReadonlyArray<{ name?: string; parallel: number; running: number; queue_length: number }>,
  options: { draining: boolean; maxQueue: number; model?: string },
): DaemonLoad {
  const wanted = options.model === undefined ? null : canonicalModelName(options.model);
  const named = wanted === null ? [] : models.filter((m) => m.name !== undefined && canonicalModelName(m.name) === wanted);
  const counted = named.length > 0 ? named : models;
  if (counted.length === 0) return { draining: options.draining, slots: 1, freeSlots: 1, queued: 0, maxQueue: options.maxQueue };
  let slots = 0;
  let running = 0;
  let queued = 0;
  for (const m of counted) {
    slots += Math.max(0, m.parallel);
    running += Math.max(0, m.running);
    queued += Math.max(0, m.queue_length);
  }
  slots = Math.max(1, slots);
  return { draining: options.draining, slots, freeSlots: Math.max(0, slots - running), queued, maxQueue: options.maxQueue };
}
