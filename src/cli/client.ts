import { fstatSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { ConfigError } from "../config.ts";
import type { ModelInfo } from "../domain/models.ts";
import type { StatusView } from "../server/statusView.ts";
import { answerOnce, interactiveChat, preload, readStdin, type ChatSettings } from "./chat.ts";
import { call, ClientError, json, target, type Target } from "./http.ts";
import { formatList, formatPs, formatShow, isModelName, listModels, runningModels, showModel } from "./models.ts";

/**
 * The client verbs: `kekahyde status|list|ps|show|load|run|stop|unload`, talking to a running daemon. They
 * find it through the same --host/--port/--api-key flags, KEKAHYDE_* environment and --config file as `serve`.
 */

export const CLIENT_VERBS = ["status", "list", "ps", "show", "load", "run", "stop", "unload"] as const;
export type ClientVerb = (typeof CLIENT_VERBS)[number];

const CONNECTION = "They take --host, --port, --api-key and --config like serve (and the same KEKAHYDE_* variables).";

export const CLIENT_HELP = `Client commands (talk to a running daemon):
  kekahyde list                                the models in the catalogue (--models-dir): NAME, ID, SIZE, MODIFIED
  kekahyde ps                                  the loaded models: NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL
  kekahyde show NAME                           a model's architecture, parameters, context, quantization, capabilities
  kekahyde run NAME                            chat with a model in the terminal (/? for help, Ctrl-D or /bye to leave)
  kekahyde run NAME "PROMPT"                   answer one prompt, only the answer on stdout (also: echo PROMPT | kekahyde run NAME)
  kekahyde run "PROMPT" [--raw]                answer with the default (last loaded) model, when PROMPT is not a model's name
  kekahyde status [--json]                     state, model, queue, resources
  kekahyde load PATH [--ctx-size N] [--threads N]
                                               load a model, with a progress bar
  kekahyde stop [--all]                        cancel the running generation (--all: and the queue)
  kekahyde unload                              free the model
${CONNECTION} "kekahyde VERB --help" says more.`;

type Options = NonNullable<ParseArgsConfig["options"]>;

const SAMPLING: Options = {
  system: { type: "string" },
  "max-tokens": { type: "string" },
  temperature: { type: "string" },
  seed: { type: "string" },
};

const VERBS: Record<ClientVerb, { options: Options; help: string }> = {
  status: {
    options: { json: { type: "boolean" } },
    help: `Usage: kekahyde status [--json]

The daemon's state, its default model, the queue, CPU and memory (GET /status). --json prints /status as it is.`,
  },
  list: {
    options: {},
    help: `Usage: kekahyde list

The models the daemon can load by name: the .gguf files of its catalogue (--models-dir), as GET /api/tags
lists them. NAME is what \`kekahyde run\` and \`kekahyde show\` take; ID is the start of the file's digest.`,
  },
  ps: {
    options: {},
    help: `Usage: kekahyde ps

The loaded models (GET /api/ps): NAME, ID, SIZE (estimated memory), PROCESSOR ("100% CPU" or the share on a
GPU), CONTEXT (tokens) and UNTIL (when keep-alive unloads it: "4 minutes from now", "Forever", "Stopping...").`,
  },
  show: {
    options: {
      json: { type: "boolean" },
      modelfile: { type: "boolean" },
      parameters: { type: "boolean" },
      template: { type: "boolean" },
      system: { type: "boolean" },
      license: { type: "boolean" },
    },
    help: `Usage: kekahyde show NAME [--json | --modelfile | --parameters | --template | --system | --license]

A model's facts (POST /api/show): architecture, parameters, context length, embedding length, quantization,
capabilities and default parameters. --json prints the whole answer; the other flags print that part only.`,
  },
  load: {
    options: { "ctx-size": { type: "string" }, threads: { type: "string" } },
    help: `Usage: kekahyde load PATH [--ctx-size N] [--threads N]

Loads a GGUF file (POST /load_model), with a progress bar on a terminal.`,
  },
  run: {
    options: { ...SAMPLING, raw: { type: "boolean" }, keepalive: { type: "string" }, "keep-alive": { type: "string" }, verbose: { type: "boolean" } },
    help: `Usage:
  kekahyde run NAME                      chat with the model NAME in the terminal
  kekahyde run NAME PROMPT...            answer one prompt and exit (the words are joined by spaces)
  echo PROMPT | kekahyde run NAME        the same with the prompt from stdin (stdin comes first, then the words)
  kekahyde run "PROMPT"                  answer with the default model: the one most recently loaded (POST /run_prompt)

NAME is a model of \`kekahyde list\` (loaded on first use) or of \`kekahyde ps\`. A single argument that names no
model is a prompt for the default model (POST /run_prompt), as before models had names; but with a prompt
piped in, a single word is always taken for a model's name.
One-shot answers go to stdout, nothing else does; errors go to stderr and exit 1.

In the chat:
  >>> MESSAGE        send a message; the answer is streamed, and every turn is sent again with the next
  >>> """            begin a multi-line message; a line ending with """ ends it
  Ctrl-C             stop the answer being written and come back to the prompt (POST /stop {"id"}:
                     this answer only, by its X-Request-Id); at the prompt, clear what is typed
  Ctrl-D, /bye       leave
  /clear             forget the conversation so far
  /set parameter NAME VALUE, /set system TEXT, /set verbose, /set quiet
  /show              the model's facts
  /?, /help          the commands

Options:
  --system TEXT          a system message before the conversation
  --max-tokens N         most tokens per answer (Ollama's num_predict)
  --temperature T        sampling temperature (0: greedy)
  --seed N               sampling seed
  --keepalive DURATION   how long the model stays loaded after the last answer ("5m", "1h", 0, -1)
  --verbose              each answer's token counts and speeds, on stderr
  --raw                  complete the prompt as given (POST /api/generate with "raw": true) instead of chatting`,
  },
  stop: {
    options: { all: { type: "boolean" } },
    help: `Usage: kekahyde stop [--all]

Cancels the running generation (POST /stop); --all also drops the requests waiting in the queue.`,
  },
  unload: {
    options: {},
    help: `Usage: kekahyde unload

Frees the loaded models (POST /unload_model).`,
  },
};

/** `kekahyde VERB --help`. */
export function clientVerbHelp(verb: ClientVerb): string {
  return `${VERBS[verb].help}\n\n${CONNECTION}`;
}

const mib = (n: number) => `${(n / 1048576).toFixed(0)} MiB`;

async function status(t: Target, asJson: boolean): Promise<void> {
  const s = await json<StatusView>(t, "GET", "/status");
  if (asJson) return void console.log(JSON.stringify(s, null, 2));
  const lines = [
    `state      ${s.state}`,
    `model      ${s.model ? `${s.model.name} (${s.model.architecture}, ${mib(s.model.size_bytes)}, context ${s.model.context_size}, ${s.model.threads} threads)` : "none"}`,
    `queue      ${s.queue_length}`,
    `cpu        ${s.cpu_usage} %   memory ${mib(s.memory_usage)}`,
  ];
  if (s.generation) lines.push(`generation ${s.generation.tokens} tokens${s.generation.tokens_per_s ? `, ${s.generation.tokens_per_s} tokens/s` : ""}${s.generation.running ? " (running)" : `, ${s.generation.finish_reason}`}`);
  if (s.last_error) lines.push(`last error ${s.last_error.message}`);
  console.log(lines.join("\n"));
}

function progressBar(fraction: number, label: string): string {
  const width = 30;
  const done = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return `\r${label} [${"#".repeat(done)}${".".repeat(width - done)}] ${Math.round(fraction * 100)}%`;
}

async function load(t: Target, path: string, settings: Record<string, number>): Promise<void> {
  const absolute = resolve(path);
  const tty = process.stderr.isTTY === true;
  const request = call(t, "POST", "/load_model", { path: absolute, ...settings });
  let finished = false;
  const poll = (async () => {
    while (!finished && tty) {
      await new Promise((r) => setTimeout(r, 150));
      const s = (await call(t, "GET", "/status").then((r) => r.json()).catch(() => null)) as { load_progress?: number | null } | null;
      if (!finished && s?.load_progress != null) process.stderr.write(progressBar(s.load_progress, "loading"));
    }
  })();
  try {
    const { model } = (await (await request).json()) as { model: ModelInfo };
    finished = true;
    await poll;
    if (tty) process.stderr.write(progressBar(1, "loading") + "\n");
    console.log(`Loaded ${model.name} (${model.architecture}, ${mib(model.size_bytes)}, context ${model.context_size})`);
  } finally {
    finished = true;
  }
}

/** The default model answers a prompt (POST /run_prompt), as `kekahyde run "PROMPT"` always did. */
async function runPrompt(t: Target, prompt: string, options: Record<string, unknown>): Promise<void> {
  let res: Response;
  try {
    res = await call(t, "POST", "/run_prompt", { prompt, stream: true, ...options });
  } catch (e) {
    if (e instanceof ClientError && e.status === 409 && /no model/i.test(e.message) && !/\s/.test(prompt))
      throw new ClientError(`"${prompt}" is no model of \`kekahyde list\` or \`kekahyde ps\`, and no model is loaded to answer it as a prompt (${e.message})`, e.status);
    throw e;
  }
  const decoder = new TextDecoder();
  let last = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    last = decoder.decode(chunk, { stream: true });
    process.stdout.write(last);
  }
  if (!last.endsWith("\n")) process.stdout.write("\n");
}

/** Whether stdin is a pipe, a socket or a file (`echo hi | kekahyde …`, `< file`): not a terminal or /dev/null. */
function stdinIsPiped(): boolean {
  try {
    const s = fstatSync(0);
    return s.isFIFO() || s.isSocket() || s.isFile();
  } catch {
    return false;
  }
}

async function run(t: Target, positionals: string[], values: Record<string, unknown>, num: (flag: string) => number | undefined): Promise<void> {
  if (positionals.length === 0) throw new ConfigError(`usage: kekahyde run NAME ["PROMPT"], or kekahyde run "PROMPT" (kekahyde run --help)`);
  const [first] = positionals;
  // `echo PROMPT | kekahyde run WORD`: with a prompt piped in, a lone word is a model's name, known or not.
  const pipedModel = positionals.length === 1 && !/\s/.test(first) && values.raw !== true && stdinIsPiped();
  if (positionals.length === 1 && !pipedModel && !(await isModelName(t, first))) {
    // The form from before models had names: a prompt for the default model.
    if (!/\s/.test(first) && values.raw !== true) process.stderr.write(`kekahyde run: no model is called "${first}" (kekahyde list), so it is a prompt for the default model\n`);
    const options: Record<string, unknown> = {};
    if (values.raw) options.raw = true;
    if (values.system) options.system = values.system;
    for (const [flag, field] of [["max-tokens", "max_tokens"], ["temperature", "temperature"], ["seed", "seed"]] as const) if (num(flag) !== undefined) options[field] = num(flag);
    return runPrompt(t, positionals[0], options);
  }
  const [model, ...words] = positionals;
  const options: Record<string, unknown> = {};
  for (const [flag, field] of [["max-tokens", "num_predict"], ["temperature", "temperature"], ["seed", "seed"]] as const) if (num(flag) !== undefined) options[field] = num(flag);
  const keepAlive = (values.keepalive ?? values["keep-alive"]) as string | undefined;
  const settings: ChatSettings = {
    model,
    options,
    system: values.system as string | undefined,
    keepAlive: keepAlive === undefined ? undefined : /^-?\d+(\.\d+)?$/.test(keepAlive) ? Number(keepAlive) : keepAlive,
    verbose: values.verbose === true,
  };
  const raw = values.raw === true;
  if (process.stdin.isTTY !== true) {
    // Piped: stdin, then the words, as one prompt (as `ollama run`).
    const piped = (await readStdin()).replace(/\s+$/, "");
    const prompt = [piped, ...words].filter((p) => p !== "").join(" ");
    if (prompt === "") throw new ConfigError(`no prompt: stdin was empty (kekahyde run ${model} "PROMPT", or a terminal for a chat)`);
    return answerOnce(t, settings, prompt, raw);
  }
  if (words.length > 0) return answerOnce(t, settings, words.join(" "), raw);
  if (raw) throw new ConfigError(`--raw completes a prompt: kekahyde run ${model} "PROMPT" --raw`);
  await preload(t, settings);
  return interactiveChat(t, settings);
}

export async function runClientVerb(verb: ClientVerb, argv: string[]): Promise<void> {
  const spec = VERBS[verb];
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        "api-key": { type: "string" },
        config: { type: "string" },
        help: { type: "boolean", short: "h" },
        ...spec.options,
      },
    });
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (kekahyde ${verb} --help)`);
  }
  const { values, positionals } = parsed;
  if (values.help) return void console.log(clientVerbHelp(verb));
  const t = target(values);
  const num = (flag: string) => {
    const v = values[flag];
    if (typeof v !== "string") return undefined;
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n)) throw new ConfigError(`--${flag} must be a number, not "${v}"`);
    return n;
  };
  const noArguments = () => {
    if (positionals.length) throw new ConfigError(`kekahyde ${verb} takes no arguments (kekahyde ${verb} --help)`);
  };
  try {
    switch (verb) {
      case "status":
        noArguments();
        return await status(t, values.json === true);
      case "list":
        noArguments();
        return void console.log(formatList(await listModels(t)));
      case "ps":
        noArguments();
        return void console.log(formatPs(await runningModels(t)));
      case "show": {
        if (positionals.length !== 1) throw new ConfigError("usage: kekahyde show NAME (kekahyde show --help)");
        const show = await showModel(t, positionals[0]);
        if (values.json) return void console.log(JSON.stringify(show, null, 2));
        for (const part of ["modelfile", "parameters", "template", "system", "license"] as const) {
          if (values[part]) return void process.stdout.write(`${String(show[part] ?? "").replace(/\n?$/, "\n")}`);
        }
        return void process.stdout.write(formatShow(show));
      }
      case "load": {
        if (positionals.length !== 1) throw new ConfigError("usage: kekahyde load PATH");
        const settings: Record<string, number> = {};
        if (num("ctx-size") !== undefined) settings.context_size = num("ctx-size")!;
        if (num("threads") !== undefined) settings.threads = num("threads")!;
        return await load(t, positionals[0], settings);
      }
      case "run":
        return await run(t, positionals, values, num);
      case "stop": {
        noArguments();
        const r = await json<{ stopped: boolean; dropped: number }>(t, "POST", "/stop", values.all ? { all: true } : undefined);
        return void console.log(r.stopped ? `stopped${r.dropped ? ` (and dropped ${r.dropped} queued)` : ""}` : "nothing was running");
      }
      case "unload": {
        noArguments();
        const r = await json<{ unloaded: boolean }>(t, "POST", "/unload_model");
        return void console.log(r.unloaded ? "unloaded" : "no model was loaded");
      }
    }
  } catch (e) {
    if (e instanceof ClientError) {
      console.error(`kekahyde ${verb}: ${e.message}`);
      process.exit(1);
    }
    throw e;
  }
}
