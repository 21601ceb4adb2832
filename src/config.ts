import { readFileSync } from "node:fs";
import { delimiter, extname } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseToml } from "smol-toml";
import { LOG_LEVELS, type LogLevel } from "./log.ts";
import type { FlashAttentionMode, GpuMode, MemoryBudget } from "./domain/models.ts";
import { DURATION_HELP, parseDuration } from "./duration.ts";
import {
  DEFAULT_CONTEXT_SIZE,
  DEFAULT_KEEP_ALIVE_MS,
  DEFAULT_MAX_FIRST_TOKEN_SECONDS,
  DEFAULT_MAX_LOAD_SECONDS,
  DEFAULT_MAX_QUEUE,
  DEFAULT_MAX_STALL_SECONDS,
  DEFAULT_MEMORY_FRACTION,
} from "./domain/defaults.ts";

/** Settings of `kekahyde serve`. Flags win over KEKAHYDE_* environment variables, which win over defaults. */
export interface ServeConfig {
  host: string;
  port: number;
  model: string | null;
  /** A draft model for the start-up model's speculative decoding (docs/speculative.md); null: none. */
  draftModel: string | null;
  /** "lookup": the start-up model speculates by prompt lookup (no draft model). */
  speculative: "lookup" | "off";
  /** null: chosen from the machine at start-up (see src/engine/threads.ts). */
  threads: number | null;
  contextSize: number;
  gpu: GpuMode;
  /** Flash attention in every context the daemon creates. */
  flashAttention: FlashAttentionMode;
  logLevel: LogLevel;
  maxQueue: number;
  /** Models loaded at once; loading one more unloads the least recently used idle one. */
  maxModels: number;
  /** Memory all loaded models may take: bytes, or a fraction of the memory free for models. */
  maxMemory: MemoryBudget;
  /** How long an idle model stays loaded, in ms (0: unload after each request; -1: forever). */
  keepAliveMs: number;
  /** Generations one model decodes at once, in one batch (llama-server's -np). */
  parallel: number;
  /** Bearer token every route but /health requires; null: none. */
  apiKey: string | null;
  /** Start on a non-loopback address without an API key. Dangerous: anyone who can reach it can use it. */
  insecureNoApiKey: boolean;
  /** Host header names accepted besides loopback ones. */
  allowedHosts: string[];
  /** Browser origins allowed to call the API (CORS), besides the daemon's own. */
  allowedOrigins: string[];
  /** Folders models may be loaded from; empty: any readable file. */
  modelsDirs: string[];
  maxBodyBytes: number;
  /** Requests per minute per client address; null: no limit. */
  rateLimit: number | null;
  /** Longest a generation may run, in seconds; null: no limit. */
  maxGenerationSeconds: number | null;
  /** Longest a model's load may take before its engine process is stopped, in seconds; null: no limit. */
  maxLoadSeconds: number | null;
  /** Longest a generation may wait for its first token (prompt, chat template) before its engine is stopped. */
  maxFirstTokenSeconds: number | null;
  /** Longest a generation may go without a token once it has had its first, before its engine is stopped; null: no limit. */
  maxStallSeconds: number | null;
  /** Keep one engine process started ahead, so that a load does not wait for one to start. */
  spareEngine: boolean;
  /** Port of HAProxy's agent-check responder (load feedback for a fleet); null: none. */
  agentPort: number | null;
  /** How long the daemon drains before it stops on SIGTERM; null: 2 s with --agent-port, else 0. */
  drainSeconds: number | null;
  logFormat: "auto" | "json" | "pretty";
  /** WebSocket URL of a Stately inspector; null: nothing leaves the machine. */
  inspectUrl: string | null;
  monitorIntervalMs: number;
}

export const DEFAULTS: ServeConfig = {
  host: "127.0.0.1",
  port: 3000,
  model: null,
  draftModel: null,
  speculative: "off",
  threads: null,
  contextSize: DEFAULT_CONTEXT_SIZE,
  gpu: "auto",
  flashAttention: "auto",
  logLevel: "info",
  maxQueue: DEFAULT_MAX_QUEUE,
  maxModels: 1,
  maxMemory: { fraction: DEFAULT_MEMORY_FRACTION },
  keepAliveMs: DEFAULT_KEEP_ALIVE_MS,
  parallel: 1,
  apiKey: null,
  insecureNoApiKey: false,
  allowedHosts: [],
  allowedOrigins: [],
  modelsDirs: [],
  maxBodyBytes: 1024 * 1024,
  rateLimit: null,
  maxGenerationSeconds: null,
  maxLoadSeconds: DEFAULT_MAX_LOAD_SECONDS,
  maxFirstTokenSeconds: DEFAULT_MAX_FIRST_TOKEN_SECONDS,
  maxStallSeconds: DEFAULT_MAX_STALL_SECONDS,
  spareEngine: true,
  agentPort: null,
  drainSeconds: null,
  logFormat: "auto",
  inspectUrl: null,
  monitorIntervalMs: 1000,
};

type Kind = "value" | "list" | "flag";

interface OptionDoc {
  flag: string;
  env: string;
  key: keyof ServeConfig;
  value: string;
  help: string;
  kind?: Kind;
  /** Never print the value (help, --print-config). */
  secret?: boolean;
  /** The default as people write it, where the stored value does not read well (ms, bytes, a share). */
  shown?: string;
  parse: (raw: string, name: string) => unknown;
}

/** The default of an option as --help and the README's table show it; null when it has none. */
export function shownDefault(o: OptionDoc): string | null {
  if (o.shown !== undefined) return o.shown;
  const def = DEFAULTS[o.key];
  if (o.secret || def === null || def === false || (Array.isArray(def) && def.length === 0)) return null;
  // A list as String() writes it; the one object default (the memory budget) has its `shown`.
  return Array.isArray(def) ? def.join(",") : typeof def === "object" ? JSON.stringify(def) : String(def);
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
const UNITS: Record<string, number> = { "": 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3 };
/** Bytes of "1048576", "512KiB", "1MiB", "2MB"; null when `raw` is not a size. */
function sizeInBytes(raw: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  return m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : null;
}
const byteSize = (raw: string, name: string) => {
  const bytes = sizeInBytes(raw);
  if (bytes === null) throw new ConfigError(`${name} must be a size such as 1048576, 512KiB or 1MiB, got "${raw}"`);
  if (bytes < 1024 || bytes > 1024 ** 3) throw new ConfigError(`${name} must be from 1KiB to 1GiB, got "${raw}"`);
  return bytes;
};
/** "80%" of the memory free for models, or a size: "12GiB", "8000000000". */
const memoryBudget = (raw: string, name: string): MemoryBudget => {
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(raw);
  if (percent) {
    const fraction = Number(percent[1]) / 100;
    if (fraction <= 0 || fraction > 1) throw new ConfigError(`${name} must be a percentage above 0% and at most 100%, got "${raw}"`);
    return { fraction };
  }
  const bytes = sizeInBytes(raw);
  if (bytes === null || bytes <= 0) throw new ConfigError(`${name} must be a percentage such as 80% or a size such as 12GiB, got "${raw}"`);
  return { bytes };
};
const duration = (raw: string, name: string) => {
  const ms = parseDuration(raw);
  if (ms === null) throw new ConfigError(`${name} must be ${DURATION_HELP}, got "${raw}"`);
  return ms;
};
/** Seconds from 1 to `max`, or null for "0" and "off": a limit that can be turned off. */
const secondsOrOff = (max: number) => (raw: string, name: string) => {
  if (["0", "off"].includes(raw.trim().toLowerCase())) return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new ConfigError(`${name} must be an integer from 1 to ${max} (seconds), or 0 or off for no limit, got "${raw}"`);
  return n;
};
const bool = (raw: string, name: string) => {
  if (["1", "true", "yes"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no", ""].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
};

export const OPTIONS: readonly OptionDoc[] = [
  { flag: "host", env: "KEKAHYDE_HOST", key: "host", value: "HOST", help: "address to listen on", parse: text },
  { flag: "port", env: "KEKAHYDE_PORT", key: "port", value: "PORT", help: "port to listen on (0 picks a free one)", parse: integer(0, 65535) },
  { flag: "model", env: "KEKAHYDE_MODEL", key: "model", value: "PATH", help: "GGUF model to load at start-up", parse: text },
  { flag: "draft-model", env: "KEKAHYDE_DRAFT_MODEL", key: "draftModel", value: "PATH", help: "draft model (same vocabulary) for the start-up model's speculative decoding of greedy requests", parse: text },
  { flag: "speculative", env: "KEKAHYDE_SPECULATIVE", key: "speculative", value: "lookup|off", help: "lookup: the start-up model drafts from the prompt (speculative decoding without a draft model)", parse: oneOf(["lookup", "off"]) },
  { flag: "threads", env: "KEKAHYDE_THREADS", key: "threads", value: "N", help: "CPU threads for inference", shown: "physical cores - 1, at least 1", parse: integer(1, 1024) },
  { flag: "ctx-size", env: "KEKAHYDE_CTX_SIZE", key: "contextSize", value: "N", help: "context size in tokens, capped at the model's trained length", parse: integer(16, 1 << 20) },
  { flag: "gpu", env: "KEKAHYDE_GPU", key: "gpu", value: "auto|off", help: "use a GPU when node-llama-cpp finds one (auto), or CPU only (off)", parse: oneOf(["auto", "off"]) },
  { flag: "flash-attention", env: "KEKAHYDE_FLASH_ATTENTION", key: "flashAttention", value: "auto|on|off", help: "llama.cpp's flash attention: auto (llama.cpp's default: on where supported) is faster here", parse: oneOf(["auto", "on", "off"]) },
  { flag: "max-queue", env: "KEKAHYDE_MAX_QUEUE", key: "maxQueue", value: "N", help: "requests that may wait per model while every slot generates (0: none wait); more get 503", parse: integer(0, 100_000) },
  { flag: "max-models", env: "KEKAHYDE_MAX_MODELS", key: "maxModels", value: "N", help: "models loaded at once; one more unloads the least recently used idle one (1: a load replaces the model)", parse: integer(1, 64) },
  { flag: "max-memory", env: "KEKAHYDE_MAX_MEMORY", key: "maxMemory", value: "SIZE|N%", help: "memory all loaded models may take, estimated from their GGUF metadata: a size (12GiB) or a share of free RAM/VRAM; more gets 507", shown: `${Math.round(DEFAULT_MEMORY_FRACTION * 100)}%`, parse: memoryBudget },
  { flag: "keep-alive", env: "KEKAHYDE_KEEP_ALIVE", key: "keepAliveMs", value: "DURATION", help: `how long an idle model stays loaded: ${DURATION_HELP}`, shown: `${DEFAULT_KEEP_ALIVE_MS / 60_000}m`, parse: duration },
  { flag: "parallel", env: "KEKAHYDE_PARALLEL", key: "parallel", value: "N", help: "generations one model decodes at once, in one batch (like llama-server -np); each gets its own ctx-size", parse: integer(1, 64) },
  { flag: "api-key", env: "KEKAHYDE_API_KEY", key: "apiKey", value: "KEY", secret: true, help: "require 'Authorization: Bearer KEY' on every route but GET /health", parse: text },
  { flag: "insecure-no-api-key", env: "KEKAHYDE_INSECURE_NO_API_KEY", key: "insecureNoApiKey", value: "", kind: "flag", help: "DANGEROUS: allow a non-loopback --host without an API key", parse: bool },
  { flag: "allowed-hosts", env: "KEKAHYDE_ALLOWED_HOSTS", key: "allowedHosts", value: "NAME", kind: "list", help: "Host header names accepted besides loopback ones (repeat, or comma-separate)", parse: text },
  { flag: "allowed-origins", env: "KEKAHYDE_ALLOWED_ORIGINS", key: "allowedOrigins", value: "ORIGIN", kind: "list", help: "browser origins allowed to call the API, e.g. http://localhost:5173 (repeat, or comma-separate)", parse: text },
  {
    flag: "models-dir",
    env: "KEKAHYDE_MODELS_DIR",
    key: "modelsDirs",
    value: "DIR",
    kind: "list",
    help: `models directory: its .gguf files are served by name, and paths outside it are refused (repeat; env: ${delimiter}-separated)`,
    shown: "~/.local/share/kekahyde/models, restricting nothing",
    parse: text,
  },
  { flag: "max-body", env: "KEKAHYDE_MAX_BODY", key: "maxBodyBytes", value: "SIZE", help: "largest request body, e.g. 1MiB; larger gets 413", shown: "1MiB", parse: byteSize },
  { flag: "rate-limit", env: "KEKAHYDE_RATE_LIMIT", key: "rateLimit", value: "N", help: "requests per minute per client address (reads: 10x N); more get 429", parse: integer(1, 1_000_000) },
  { flag: "max-generation-time", env: "KEKAHYDE_MAX_GENERATION_TIME", key: "maxGenerationSeconds", value: "SECONDS", help: "end any generation after this long (finish reason 'timeout')", parse: integer(1, 86_400) },
  { flag: "max-load-time", env: "KEKAHYDE_MAX_LOAD_TIME", key: "maxLoadSeconds", value: "SECONDS", help: "stop a model's engine process when its load takes longer (refused with 504)", parse: integer(1, 86_400) },
  { flag: "max-first-token-time", env: "KEKAHYDE_MAX_FIRST_TOKEN_TIME", key: "maxFirstTokenSeconds", value: "SECONDS", help: "stop a model's engine process when a generation waits longer for its first token (a runaway prompt or chat template; 504)", parse: integer(1, 86_400) },
  {
    flag: "max-stall-time",
    env: "KEKAHYDE_MAX_STALL_TIME",
    key: "maxStallSeconds",
    value: "SECONDS",
    help: "stop a model's engine process when a generation goes this long without a token after its first (a stuck engine; 504); 0 or off: no limit",
    parse: secondsOrOff(86_400),
  },
  { flag: "spare-engine", env: "KEKAHYDE_SPARE_ENGINE", key: "spareEngine", value: "true|false", help: "keep one engine process started ahead, so a load does not wait for one to start", parse: bool },
  { flag: "agent-port", env: "KEKAHYDE_AGENT_PORT", key: "agentPort", value: "PORT", help: "answer HAProxy's agent-check on this port with the daemon's load (free slots, queue), or drain (docs/scale-out.md)", parse: integer(1, 65535) },
  { flag: "drain-seconds", env: "KEKAHYDE_DRAIN_SECONDS", key: "drainSeconds", value: "SECONDS", help: "on SIGTERM, keep serving this long while /health and the agent say 'draining'", shown: "2 with --agent-port, else 0", parse: integer(0, 3600) },
  { flag: "log-level", env: "KEKAHYDE_LOG_LEVEL", key: "logLevel", value: "LEVEL", help: `log level: ${LOG_LEVELS.join(", ")}`, parse: oneOf(LOG_LEVELS) },
  { flag: "log-format", env: "KEKAHYDE_LOG_FORMAT", key: "logFormat", value: "auto|json|pretty", help: "json lines, or pretty for people; auto: pretty when stdout is a terminal", parse: oneOf(["auto", "json", "pretty"]) },
  { flag: "inspect", env: "KEKAHYDE_INSPECT", key: "inspectUrl", value: "WS_URL", help: "send the machine's events to a Stately inspector over WebSocket, e.g. ws://localhost:8080 (off by default)", parse: text },
];

/** Client verbs' own option (kekahyde status|load|run|stop|unload). */
const CONFIG_OPTION = { flag: "config", env: "KEKAHYDE_CONFIG" } as const;

export function serveHelp(): string {
  const rows = OPTIONS.map((o) => {
    const left = `  --${o.flag}${o.value ? ` ${o.value}` : ""}`.padEnd(34);
    const def = shownDefault(o);
    return `${left}${o.help}${def === null ? "" : ` [default: ${def}]`}\n${"".padEnd(34)}env ${o.env}`;
  });
  return [
    "Usage: kekahyde serve [options]      (npm start -- [options])",
    "",
    "Runs the Kekahyde daemon: loads GGUF models and serves the HTTP API.",
    "",
    "Options (flags override environment variables, which override the config file, which overrides defaults):",
    ...rows,
    "  --config FILE                     read settings from a JSON or TOML file (keys: the flag names)",
    "                                  env KEKAHYDE_CONFIG",
    "  --print-config                    print the merged configuration as JSON and exit",
    "  -h, --help                        show this help",
    "  -v, --version                     print the version",
    "",
    "API: POST /load_model {\"path\"}, POST /run_prompt {\"prompt\"}, POST /stop, GET /status, POST /unload_model, GET /health.",
    "Stop the daemon with Ctrl-C (SIGINT) or SIGTERM: it cancels generation and frees the model first.",
    "Security model: docs/security.md.",
  ].join("\n");
}

export interface ParsedServeArgs {
  config: ServeConfig;
  configPath: string | null;
  help: boolean;
  version: boolean;
  printConfig: boolean;
}

function splitList(raw: string, o: OptionDoc, fromEnv: boolean): string[] {
  const sep = fromEnv && o.key === "modelsDirs" ? delimiter : o.key === "modelsDirs" ? null : ",";
  const parts = sep === null ? [raw] : raw.split(sep);
  return parts.map((p) => p.trim()).filter(Boolean).map((p) => o.parse(p, fromEnv ? o.env : `--${o.flag}`) as string);
}

/** Reads a config file: JSON or TOML (by extension), keys named as the flags ("port", "models-dir", ...). */
function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read the config file ${path}: ${(e as Error).message}`);
  }
  let data: unknown;
  try {
    data = extname(path).toLowerCase() === ".toml" ? parseToml(text) : JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`the config file ${path} is not valid ${extname(path).toLowerCase() === ".toml" ? "TOML" : "JSON"}: ${(e as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) throw new ConfigError(`the config file ${path} must hold an object of settings`);
  const known = new Set(OPTIONS.map((o) => o.flag));
  for (const key of Object.keys(data)) {
    if (!known.has(key)) throw new ConfigError(`unknown key "${key}" in ${path}; known keys: ${[...known].join(", ")}`);
  }
  return data as Record<string, unknown>;
}

function fromFile(o: OptionDoc, value: unknown, path: string): unknown {
  const name = `"${o.flag}" in ${path}`;
  if (o.kind === "flag") {
    if (typeof value !== "boolean") throw new ConfigError(`${name} must be true or false`);
    return value;
  }
  if (o.kind === "list") {
    const items = Array.isArray(value) ? value : [value];
    return items.map((v) => o.parse(String(v), name));
  }
  if (typeof value !== "string" && typeof value !== "number") throw new ConfigError(`${name} must be a string or a number`);
  return o.parse(String(value), name);
}

export function parseServeArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedServeArgs {
  const options = Object.fromEntries(
    OPTIONS.map((o) => [o.flag, o.kind === "flag" ? { type: "boolean" as const } : { type: "string" as const, multiple: o.kind === "list" }]),
  );
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        ...options,
        config: { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
        "print-config": { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const values = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const config: Record<string, unknown> = { ...DEFAULTS };
  const configPath = typeof values.config === "string" ? values.config : env[CONFIG_OPTION.env] || null;
  if (configPath) {
    const file = readConfigFile(configPath);
    for (const o of OPTIONS) if (o.flag in file) config[o.key] = fromFile(o, file[o.flag], configPath);
  }
  for (const o of OPTIONS) {
    const flag = values[o.flag];
    const fromEnv = env[o.env];
    if (o.kind === "flag") {
      if (flag === true) config[o.key] = true;
      else if (fromEnv !== undefined) config[o.key] = o.parse(fromEnv, o.env);
    } else if (o.kind === "list") {
      if (Array.isArray(flag) && flag.length > 0) config[o.key] = flag.flatMap((f) => splitList(f, o, false));
      else if (fromEnv !== undefined && fromEnv !== "") config[o.key] = splitList(fromEnv, o, true);
    } else if (typeof flag === "string") config[o.key] = o.parse(flag, `--${o.flag}`);
    else if (fromEnv !== undefined && fromEnv !== "") config[o.key] = o.parse(fromEnv, o.env);
  }
  return {
    config: config as unknown as ServeConfig,
    configPath,
    help: values.help === true,
    version: values.version === true,
    printConfig: values["print-config"] === true,
  };
}

/** The configuration as --print-config shows it: secrets masked. */
export function printableConfig(config: ServeConfig): Record<string, unknown> {
  return { ...config, apiKey: config.apiKey === null ? null : "(set)" };
}
