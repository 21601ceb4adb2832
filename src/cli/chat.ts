import { randomUUID } from "node:crypto";
import { createInterface, type Interface } from "node:readline";
import { Writable } from "node:stream";
import { call, ClientError, json, ndjson, type Target } from "./http.ts";
import { formatShow, showModel } from "./models.ts";

/**
 * `kekahyde run NAME`: a chat with one model over the daemon's Ollama route POST /api/chat, as `ollama run`
 * does it. With a prompt (arguments, or stdin that is not a terminal) it answers once, only the answer on
 * stdout. With a terminal it is a conversation: every turn is sent again with the next one, Ctrl-C stops the
 * answer being written (POST /stop {"id"}, the request's own X-Request-Id) and returns to the prompt, Ctrl-D
 * or /bye leaves, `"""` opens a multi-line message.
 */

interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ChatSettings {
  model: string;
  /** Ollama's `options`: num_predict, temperature, seed, ... */
  options: Record<string, unknown>;
  system?: string;
  keepAlive?: string | number;
  /** Print each answer's token counts and speeds to stderr, as `ollama run --verbose`. */
  verbose: boolean;
}

interface ChatAnswer {
  content: string;
  /** "stop", "length", ... from the last line; null when the stream ended without one (stopped). */
  doneReason: string | null;
  /** The last line, with its durations and counts. */
  final: Record<string, unknown> | null;
  /** Cut short by Ctrl-C. */
  stopped: boolean;
}

function requestBody(settings: ChatSettings, messages: ChatMessage[]): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: settings.model,
    messages: settings.system ? [{ role: "system", content: settings.system }, ...messages] : messages,
    stream: true,
  };
  if (Object.keys(settings.options).length) body.options = settings.options;
  if (settings.keepAlive !== undefined) body.keep_alive = settings.keepAlive;
  return body;
}

/** One streamed answer: each piece of text to `write` as it comes. An aborted `signal` ends it as stopped. */
function streamChat(
  t: Target,
  settings: ChatSettings,
  messages: ChatMessage[],
  write: (text: string) => void,
  signal?: AbortSignal,
  requestId?: string,
): Promise<ChatAnswer> {
  return streamAnswer(t, "/api/chat", requestBody(settings, messages), write, signal, requestId);
}

/** POST /api/chat or /api/generate, streamed: their NDJSON lines carry the text in `message.content` or `response`. */
async function streamAnswer(
  t: Target,
  path: "/api/chat" | "/api/generate",
  body: Record<string, unknown>,
  write: (text: string) => void,
  signal?: AbortSignal,
  requestId?: string,
): Promise<ChatAnswer> {
  const answer: ChatAnswer = { content: "", doneReason: null, final: null, stopped: false };
  try {
    const res = await call(t, "POST", path, body, signal, requestId === undefined ? {} : { "X-Request-Id": requestId });
    for await (const line of ndjson(res)) {
      if (typeof line.error === "string") throw new ClientError(line.error);
      const text = path === "/api/chat" ? (line.message as { content?: unknown } | null | undefined)?.content : line.response;
      if (typeof text === "string" && text) {
        answer.content += text;
        write(text);
      }
      if (line.done === true) {
        answer.doneReason = typeof line.done_reason === "string" ? line.done_reason : null;
        answer.final = line;
      }
    }
  } catch (e) {
    if (!signal?.aborted) throw e;
    answer.stopped = true;
  }
  return answer;
}

const duration = (ns: unknown) => {
  if (typeof ns !== "number") return "?";
  const ms = ns / 1e6;
  return ms >= 1000 ? `${(ms / 1000).toFixed(3)}s` : `${ms.toFixed(3)}ms`;
};
const tokenCount = (n: unknown) => (typeof n === "number" ? String(n) : "?");
const rate = (count: unknown, ns: unknown) => (typeof count === "number" && typeof ns === "number" && ns > 0 ? `${((count * 1e9) / ns).toFixed(2)} tokens/s` : "?");

/** `ollama run --verbose`'s figures for one answer. */
function formatStats(final: Record<string, unknown>): string {
  return [
    `total duration:       ${duration(final.total_duration)}`,
    `load duration:        ${duration(final.load_duration)}`,
    `prompt eval count:    ${tokenCount(final.prompt_eval_count)} token(s)`,
    `prompt eval duration: ${duration(final.prompt_eval_duration)}`,
    `prompt eval rate:     ${rate(final.prompt_eval_count, final.prompt_eval_duration)}`,
    `eval count:           ${tokenCount(final.eval_count)} token(s)`,
    `eval duration:        ${duration(final.eval_duration)}`,
    `eval rate:            ${rate(final.eval_count, final.eval_duration)}`,
  ].join("\n");
}

/**
 * One question, one answer on stdout (and nothing else there), for scripts and pipes. `raw`: the prompt is
 * completed as given (POST /api/generate with "raw": true), not sent as a chat message.
 */
export async function answerOnce(t: Target, settings: ChatSettings, prompt: string, raw = false): Promise<void> {
  let last = "";
  const write = (text: string) => {
    last = text;
    process.stdout.write(text);
  };
  const body = raw
    ? { ...requestBody(settings, []), messages: undefined, prompt, raw: true, ...(settings.system && { system: settings.system }) }
    : requestBody(settings, [{ role: "user", content: prompt }]);
  const answer = await streamAnswer(t, raw ? "/api/generate" : "/api/chat", body, write);
  if (!last.endsWith("\n")) process.stdout.write("\n");
  if (settings.verbose && answer.final) process.stderr.write(`\n${formatStats(answer.final)}\n`);
}

/** All of stdin, as `echo hi | kekahyde run NAME` gives it. */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * What readline writes (its echo of the keys typed, its prompt), passed to the terminal except while an
 * answer is being written, so that keys typed meanwhile do not land in the middle of the answer; they stay
 * in readline's line and show with the next prompt.
 */
class Echo extends Writable {
  muted = false;
  readonly isTTY = true;
  constructor(private readonly terminal: NodeJS.WriteStream) {
    super();
    terminal.on("resize", () => this.emit("resize"));
  }
  get columns(): number {
    return this.terminal.columns;
  }
  get rows(): number {
    return this.terminal.rows;
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    // Written at once, in order with the answer's own writes to the terminal.
    if (!this.muted) this.terminal.write(chunk);
    done();
  }
}

type Input = { kind: "line"; text: string; echoed: boolean } | { kind: "interrupt" } | { kind: "eof" };

const CHAT_HELP = `Available Commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use """ to begin a multi-line message.
Ctrl-C stops an answer being written; Ctrl-D or /bye leaves.`;

const SET_HELP = `Available Commands:
  /set parameter NAME VALUE   Set a parameter (num_predict, temperature, seed, top_k, top_p, min_p, repeat_penalty, num_ctx, stop)
  /set system TEXT            Set the system message
  /set verbose                Show the figures of each answer
  /set quiet                  Do not show them`;

const EXIT_HINT = "Use Ctrl-D or /bye to exit.";

/** Joins the lines of a `"""` message: the (empty) rest of the opening line and of the closing line are left out. */
export function joinMultiline(pieces: string[]): string {
  const parts = [...pieces];
  if (parts.length > 1 && parts[0] === "") parts.shift();
  if (parts.length > 1 && parts.at(-1) === "") parts.pop();
  return parts.join("\n");
}

function parameterValue(name: string, value: string): unknown {
  if (name === "stop") return [value.replace(/^"(.*)"$/, "$1")];
  const n = Number(value);
  return value.trim() !== "" && Number.isFinite(n) ? n : value;
}

/** A terminal conversation with `settings.model`. Resolves when the user leaves. */
export async function interactiveChat(t: Target, settings: ChatSettings): Promise<void> {
  const stdout = process.stdout;
  const echo = new Echo(stdout);
  const rl: Interface = createInterface({ input: process.stdin, output: echo, terminal: true, historySize: 200, removeHistoryDuplicates: true });
  const history: ChatMessage[] = [];

  const inbox: Input[] = [];
  let wake: (() => void) | null = null;
  const push = (input: Input) => {
    inbox.push(input);
    wake?.();
  };
  /** Set while an answer is being written: Ctrl-C stops it instead of reaching the prompt. */
  let busy: { interrupt(): void } | null = null;
  const onInterrupt = () => (busy ? busy.interrupt() : push({ kind: "interrupt" }));
  rl.on("line", (text) => push({ kind: "line", text, echoed: !echo.muted }));
  rl.on("SIGINT", onInterrupt);
  rl.on("close", () => push({ kind: "eof" }));
  // Ctrl-C reaches readline as a key while it holds the terminal; a real SIGINT (kill -INT) does the same.
  process.on("SIGINT", onInterrupt);

  /** The next input; the prompt is shown only when nothing typed ahead is waiting. */
  const next = async (prompt: string): Promise<Input> => {
    if (inbox.length === 0) {
      rl.setPrompt(prompt);
      rl.prompt(true);
      while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
      wake = null;
    }
    const input = inbox.shift()!;
    // A line typed while an answer was written was not shown: show it with the prompt it answers.
    if (input.kind === "line" && !input.echoed) stdout.write(`${prompt}${input.text}\n`);
    return input;
  };

  const clearTypedLine = () => {
    echo.muted = true;
    rl.write(null, { ctrl: true, name: "e" });
    rl.write(null, { ctrl: true, name: "u" });
    echo.muted = false;
  };

  const answer = async (content: string) => {
    history.push({ role: "user", content });
    const controller = new AbortController();
    // Our own X-Request-Id, so that Ctrl-C stops this answer and no other (another terminal's, with --parallel).
    const requestId = `kekahyde-run-${randomUUID()}`;
    let stopping = false;
    let giveUp: NodeJS.Timeout | undefined;
    busy = {
      interrupt: () => {
        // A second Ctrl-C does not wait for the daemon: the request is dropped, which cancels it too.
        if (stopping) return controller.abort();
        stopping = true;
        giveUp = setTimeout(() => controller.abort(), 3000);
        json<{ stopped?: boolean; dropped?: number }>(t, "POST", "/stop", { id: requestId }).then(
          // Stopped, or dropped while it waited: its stream ends now. Neither: it had not reached the daemon yet.
          (r) => void (!r.stopped && !r.dropped && controller.abort()),
          () => controller.abort(),
        );
      },
    };
    echo.muted = true;
    let written = "";
    try {
      const result = await streamChat(
        t,
        settings,
        history,
        (text) => {
          written += text;
          stdout.write(text);
        },
        controller.signal,
        requestId,
      );
      // What was shown is what the model said: a stopped answer stays in the history as far as it went.
      if (result.content) history.push({ role: "assistant", content: result.content });
      else history.pop();
      stdout.write(written === "" ? "" : written.endsWith("\n") ? "\n" : "\n\n");
      if (settings.verbose && result.final) process.stderr.write(`${formatStats(result.final)}\n\n`);
    } catch (e) {
      history.pop();
      if (written && !written.endsWith("\n")) stdout.write("\n");
      process.stderr.write(`Error: ${(e as Error).message}\n\n`);
    } finally {
      clearTimeout(giveUp);
      busy = null;
      echo.muted = false;
    }
  };

  /** A slash command; false when it is time to leave. */
  const command = async (line: string): Promise<boolean> => {
    const [name, ...args] = line.split(/\s+/);
    switch (name) {
      case "/bye":
      case "/exit":
        return false;
      case "/clear":
        history.length = 0;
        stdout.write("Cleared session context\n");
        return true;
      case "/?":
      case "/help":
        stdout.write(`${args[0] === "set" ? SET_HELP : CHAT_HELP}\n\n`);
        return true;
      case "/show":
        try {
          stdout.write(`${formatShow(await showModel(t, settings.model))}\n`);
        } catch (e) {
          process.stderr.write(`Error: ${(e as Error).message}\n`);
        }
        return true;
      case "/set": {
        const [what, key, ...rest] = args;
        if (what === "verbose" || what === "quiet") {
          settings.verbose = what === "verbose";
          stdout.write(`Set '${what}' mode.\n`);
        } else if (what === "system" && key !== undefined) {
          settings.system = line.replace(/^\/set\s+system\s+/, "").replace(/^"(.*)"$/s, "$1");
          stdout.write("Set system message.\n");
        } else if (what === "parameter" && key !== undefined && rest.length > 0) {
          settings.options = { ...settings.options, [key]: parameterValue(key, rest.join(" ")) };
          stdout.write(`Set parameter '${key}' to '${rest.join(" ")}'\n`);
        } else {
          stdout.write(`${SET_HELP}\n\n`);
        }
        return true;
      }
      default:
        stdout.write(`Unknown command '${name}'. Type /? for help\n`);
        return true;
    }
  };

  try {
    /** The lines of a `"""` message so far; null outside one. */
    let multiline: string[] | null = null;
    for (;;) {
      const input = await next(multiline ? "... " : ">>> ");
      if (input.kind === "eof") {
        stdout.write("\n");
        return;
      }
      if (input.kind === "interrupt") {
        const typed = rl.line.length > 0 || multiline !== null;
        clearTypedLine();
        multiline = null;
        stdout.write(typed ? "\n" : `\n${EXIT_HINT}\n`);
        continue;
      }
      const line = input.text;
      let message: string;
      if (multiline) {
        if (!line.endsWith('"""')) {
          multiline.push(line);
          continue;
        }
        multiline.push(line.slice(0, -3));
        message = joinMultiline(multiline);
        multiline = null;
      } else if (line.trimStart().startsWith('"""')) {
        const rest = line.trimStart().slice(3);
        if (!rest.endsWith('"""')) {
          multiline = [rest];
          continue;
        }
        message = rest.slice(0, -3);
      } else if (line.trimStart().startsWith("/")) {
        if (!(await command(line.trim()))) return;
        continue;
      } else {
        message = line;
      }
      if (message.trim() === "") continue;
      await answer(message);
    }
  } finally {
    process.off("SIGINT", onInterrupt);
    rl.close();
  }
}

/** Loads the model before the first prompt (Ollama's empty chat), so an unknown name fails at once and the first answer does not wait for the load. */
export async function preload(t: Target, settings: ChatSettings): Promise<void> {
  const spinner = process.stderr.isTTY ? startSpinner() : () => {};
  try {
    const body: Record<string, unknown> = { model: settings.model, messages: [], stream: false };
    if (settings.keepAlive !== undefined) body.keep_alive = settings.keepAlive;
    await call(t, "POST", "/api/chat", body);
  } catch (e) {
    // A daemon that wants a message before it loads: at least make sure the name is known.
    if (e instanceof ClientError && e.status === 400) await showModel(t, settings.model);
    else throw e;
  } finally {
    spinner();
  }
}

function startSpinner(): () => void {
  const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
  let i = 0;
  let shown = false;
  const timer = setInterval(() => {
    shown = true;
    process.stderr.write(`\r${frames[i++ % frames.length]} `);
  }, 100);
  return () => {
    clearInterval(timer);
    if (shown) process.stderr.write("\r\x1b[K");
  };
}
