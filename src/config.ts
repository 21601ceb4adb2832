import { parseArgs } from "node:util";
import { LOG_LEVELS, type LogLevel } from "./log.ts";
import type { GpuMode } from "./engine/llamaEngine.ts";

/** Settings of `kekahyde serve`. Flags win over KEKAHYDE_* environment variables, which win over defaults. */
export interface ServeConfig {
  host: string;
  port: number;
  model: string | null;
  /** null: chosen from the machine at start-up (see src/engine/threads.ts). */
  threads: number | null;
  contextSize: number;
  gpu: GpuMode;
  logLevel: LogLevel;
  maxQueue: number;
  monitorIntervalMs: number;
}

export const DEFAULTS: ServeConfig = {
  host: "127.0.0.1",
  port: 3000,
  model: null,
  threads: null,
  contextSize: 2048,
  gpu: "auto",
  logLevel: "info",
  maxQueue: 16,
  monitorIntervalMs: 1000,
};

interface OptionDoc {
  flag: string;
  env: string;
  key: keyof ServeConfig;
  value: string;
  help: string;
  parse: (raw: string, name: string) => unknown;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const integer = (min: number, max: number) => (raw: string, name: string) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
};
const oneOf = (values: readonly string[]) => (raw: string, name: string) => {
  if (!values.includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(", ")}, got "${raw}"`);
  return raw;
};
const text = (raw: string, name: string) => {
  if (raw.trim() === "") throw new ConfigError(`${name} must not be empty`);
  return raw;
};

export const OPTIONS: readonly OptionDoc[] = [
  { flag: "host", env: "KEKAHYDE_HOST", key: "host", value: "HOST", help: "address to listen on", parse: text },
  { flag: "port", env: "KEKAHYDE_PORT", key: "port", value: "PORT", help: "port to listen on (0 picks a free one)", parse: integer(0, 65535) },
  { flag: "model", env: "KEKAHYDE_MODEL", key: "model", value: "PATH", help: "GGUF model to load at start-up", parse: text },
  { flag: "threads", env: "KEKAHYDE_THREADS", key: "threads", value: "N", help: "CPU threads for inference (default: physical cores - 1, at least 1)", parse: integer(1, 1024) },
  { flag: "ctx-size", env: "KEKAHYDE_CTX_SIZE", key: "contextSize", value: "N", help: "context size in tokens, capped at the model's trained length", parse: integer(16, 1 << 20) },
  { flag: "gpu", env: "KEKAHYDE_GPU", key: "gpu", value: "auto|off", help: "use a GPU when node-llama-cpp finds one (auto), or CPU only (off)", parse: oneOf(["auto", "off"]) },
  { flag: "max-queue", env: "KEKAHYDE_MAX_QUEUE", key: "maxQueue", value: "N", help: "requests that may wait while one generates; more get 503", parse: integer(0, 100_000) },
  { flag: "log-level", env: "KEKAHYDE_LOG_LEVEL", key: "logLevel", value: "LEVEL", help: `log level: ${LOG_LEVELS.join(", ")}`, parse: oneOf(LOG_LEVELS) },
];

export function serveHelp(): string {
  const rows = OPTIONS.map((o) => {
    const left = `  --${o.flag} ${o.value}`.padEnd(26);
    const def = DEFAULTS[o.key];
    const shown = def === null ? "" : ` [default: ${def}]`;
    return `${left}${o.help}${shown}\n${"".padEnd(26)}env ${o.env}`;
  });
  return [
    "Usage: kekahyde serve [options]      (npm start -- [options])",
    "",
    "Runs the Kekahyde daemon: loads GGUF models and serves the HTTP API.",
    "",
    "Options (flags override environment variables, which override defaults):",
    ...rows,
    "  -h, --help                show this help",
    "  -v, --version             print the version",
    "",
    "API: POST /load_model {\"path\"}, POST /run_prompt {\"prompt\"}, POST /stop, GET /status, POST /unload_model.",
    "Stop the daemon with Ctrl-C (SIGINT) or SIGTERM: it cancels generation and frees the model first.",
  ].join("\n");
}

export interface ParsedServeArgs {
  config: ServeConfig;
  help: boolean;
  version: boolean;
}

export function parseServeArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedServeArgs {
  const options = Object.fromEntries(OPTIONS.map((o) => [o.flag, { type: "string" as const }]));
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { ...options, help: { type: "boolean", short: "h" }, version: { type: "boolean", short: "v" } },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const config: Record<string, unknown> = { ...DEFAULTS };
  for (const o of OPTIONS) {
    const flag = values[o.flag];
    if (typeof flag === "string") config[o.key] = o.parse(flag, `--${o.flag}`);
    else if (env[o.env] !== undefined && env[o.env] !== "") config[o.key] = o.parse(env[o.env]!, o.env);
  }
  return { config: config as unknown as ServeConfig, help: values.help === true, version: values.version === true };
}
