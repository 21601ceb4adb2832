import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, parseServeArgs } from "../config.ts";

/**
 * The client verbs: `kekahyde status|load|run|stop|unload`, talking to a running daemon. They find it through
 * the same --host/--port/--api-key flags, KEKAHYDE_* environment and --config file as `serve`.
 */

export const CLIENT_VERBS = ["status", "load", "run", "stop", "unload"] as const;
export type ClientVerb = (typeof CLIENT_VERBS)[number];

export const CLIENT_HELP = `Client commands (talk to a running daemon):
  kekahyde status [--json]                     state, model, queue, resources
  kekahyde load PATH [--ctx-size N] [--threads N]
                                               load a model, with a progress bar
  kekahyde run "PROMPT" [--raw] [--system S] [--max-tokens N] [--temperature T] [--seed N]
                                               generate, streaming to the terminal
  kekahyde stop [--all]                        cancel the running generation (--all: and the queue)
  kekahyde unload                              free the model
They take --host, --port, --api-key and --config like serve (and the same KEKAHYDE_* variables).`;

class ClientError extends Error {}

interface Target {
  base: string;
  headers: Record<string, string>;
}

function target(values: Record<string, unknown>): Target {
  const shared: string[] = [];
  for (const flag of ["host", "port", "api-key", "config"]) if (typeof values[flag] === "string") shared.push(`--${flag}`, values[flag] as string);
  const { config } = parseServeArgs(shared);
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host;
  return { base: `http://${host}:${config.port}`, headers: config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {} };
}

async function call(t: Target, method: string, path: string, body?: unknown): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(t.base + path, {
      method,
      headers: body === undefined ? t.headers : { ...t.headers, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    throw new ClientError(
      cause === "ECONNREFUSED" || cause === "ENOTFOUND" || cause === "EHOSTUNREACH"
        ? `No Kekahyde daemon answers at ${t.base}. Start one with \`kekahyde serve\` (or \`npm start\`), or point --host/--port at it.`
        : `Could not reach ${t.base}: ${(e as Error).message}`,
    );
  }
  if (!res.ok) {
    const text = await res.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? text;
    } catch {
      // not JSON: show it as it is
    }
    throw new ClientError(`${res.status}: ${message}`);
  }
  return res;
}

const mib = (n: number) => `${(n / 1048576).toFixed(0)} MiB`;

async function status(t: Target, json: boolean): Promise<void> {
  const s = (await (await call(t, "GET", "/status")).json()) as Record<string, any>;
  if (json) return void console.log(JSON.stringify(s, null, 2));
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
    const { model } = (await (await request).json()) as { model: Record<string, any> };
    finished = true;
    await poll;
    if (tty) process.stderr.write(progressBar(1, "loading") + "\n");
    console.log(`Loaded ${model.name} (${model.architecture}, ${mib(model.size_bytes)}, context ${model.context_size})`);
  } finally {
    finished = true;
  }
}

async function run(t: Target, prompt: string, options: Record<string, unknown>): Promise<void> {
  const res = await call(t, "POST", "/run_prompt", { prompt, stream: true, ...options });
  const decoder = new TextDecoder();
  let last = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    last = decoder.decode(chunk, { stream: true });
    process.stdout.write(last);
  }
  if (!last.endsWith("\n")) process.stdout.write("\n");
}

export async function runClientVerb(verb: ClientVerb, argv: string[]): Promise<void> {
  let parsed;
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
        json: { type: "boolean" },
        all: { type: "boolean" },
        raw: { type: "boolean" },
        system: { type: "string" },
        "max-tokens": { type: "string" },
        temperature: { type: "string" },
        seed: { type: "string" },
        "ctx-size": { type: "string" },
        threads: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return void console.log(CLIENT_HELP);
  const t = target(values);
  const num = (name: string) => (typeof values[name as keyof typeof values] === "string" ? Number(values[name as keyof typeof values]) : undefined);
  try {
    switch (verb) {
      case "status":
        return await status(t, values.json === true);
      case "load": {
        if (positionals.length !== 1) throw new ConfigError("usage: kekahyde load PATH");
        const settings: Record<string, number> = {};
        if (num("ctx-size") !== undefined) settings.context_size = num("ctx-size")!;
        if (num("threads") !== undefined) settings.threads = num("threads")!;
        return await load(t, positionals[0], settings);
      }
      case "run": {
        if (positionals.length !== 1) throw new ConfigError('usage: kekahyde run "PROMPT"');
        const options: Record<string, unknown> = {};
        if (values.raw) options.raw = true;
        if (values.system) options.system = values.system;
        for (const [flag, field] of [["max-tokens", "max_tokens"], ["temperature", "temperature"], ["seed", "seed"]] as const) if (num(flag) !== undefined) options[field] = num(flag);
        return await run(t, positionals[0], options);
      }
      case "stop": {
        const r = (await (await call(t, "POST", "/stop", values.all ? { all: true } : undefined)).json()) as { stopped: boolean; dropped: number };
        return void console.log(r.stopped ? `stopped${r.dropped ? ` (and dropped ${r.dropped} queued)` : ""}` : "nothing was running");
      }
      case "unload": {
        const r = (await (await call(t, "POST", "/unload_model")).json()) as { unloaded: boolean };
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
