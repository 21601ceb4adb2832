import { parseArgs } from "node:util";
import { canonicalModelName, parseModelName } from "../catalogue/names.ts";

/**
 * `kekahyde fleet-config`: a complete, commented haproxy.cfg (HAProxy 2.6, Debian's package) for a fleet
 * of Kekahyde daemons behind one address. Kekahyde has no cluster code: HAProxy routes by model name,
 * checks health, balances by each daemon's own load (its agent, agentCheck.ts), retries a full daemon's
 * 503 on another, and sends POST /stop {"id"} to the daemon that holds that request. docs/scale-out.md
 * explains every part of the output.
 */

export interface FleetConfigOptions {
  /** Where HAProxy listens: "HOST:PORT" ("0.0.0.0:8080", "127.0.0.1:8080", "[::]:8080", ":8080"). */
  listen: string;
  /** The daemons' base URLs ("http://10.0.0.5:3000"), in order: they become d1, d2, ... */
  daemons: string[];
  /** Each daemon's `--agent-port` (one number for all, or per daemon URL); none: no load feedback. */
  agentPort?: number | ((daemonUrl: string) => number);
  /** The daemons' `--api-key`, to read their catalogues (HAProxy passes clients' own keys through). */
  apiKey?: string;
  /** A path for HAProxy's admin socket (`stats socket`); none: the line is left commented out. */
  statsSocket?: string;
  fetch?: typeof fetch;
}

/** One daemon as the config sees it. */
interface FleetDaemon {
  /** d1, d2, ...: HAProxy's server name, and the value X-Kekahyde-Daemon answers with. */
  name: string;
  /** 1, 2, ...: HAProxy's server id, the same in every backend (what POST /stop's lookup stores). */
  id: number;
  url: string;
  /** host:port as HAProxy writes an address. */
  address: string;
  /** The host alone, for the agent's address. */
  host: string;
  agentPort: number | null;
  /** The model names it serves (canonical, as /v1/models lists them). */
  models: string[];
}

interface FleetPlan {
  /** The `bind` address. */
  bind: string;
  daemons: FleetDaemon[];
  statsSocket?: string;
  /** Daemons that could not be asked, with why (only when the caller chose to go on without them). */
  notes?: string[];
  /** The command line that made it, for the header. */
  command?: string;
}

class FleetConfigError extends Error {
  override name = "FleetConfigError";
}

/** Model names HAProxy can carry unquoted in an ACL (the catalogue's own alphabet). */
const SAFE_NAME = /^[A-Za-z0-9._:@/-]{1,128}$/;
/** The request ids the daemon accepts (src/server/validation.ts REQUEST_ID); others are replaced by HAProxy. */
const REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$";
/**
 * HAProxy's buffer: the largest request it holds whole, to send again to another daemon. 64 KiB (HAProxy's
 * default is 16): measured on 2.6, a larger buffer costs every request that may be retried (1 MiB: ~20 ms).
 */
const BUFFER_BYTES = 64 * 1024;

/** "HOST:PORT" → HAProxy's bind address; throws on anything else. */
export function bindAddress(listen: string): string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]*)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new FleetConfigError(`--listen must be HOST:PORT (for example 0.0.0.0:8080 or 127.0.0.1:8080), got "${listen}"`);
  const host = m[1] ?? (m[2] === "*" ? "" : m[2]);
  // HAProxy takes the last colon as the port's, so an IPv6 address needs no brackets ("::1:8080").
  return `${host}:${port}`;
}

/** A daemon URL → its parts; http only (Kekahyde serves no TLS: put TLS on HAProxy's bind). */
export function parseDaemonUrl(raw: string): { url: string; host: string; port: number; address: string } {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new FleetConfigError(`--daemon must be a URL such as http://10.0.0.5:3000, got "${raw}"`);
  }
  if (u.protocol !== "http:") throw new FleetConfigError(`--daemon ${raw}: only http:// daemons (Kekahyde serves no TLS; terminate TLS on HAProxy's bind instead)`);
  if ((u.pathname !== "/" && u.pathname !== "") || u.search || u.hash || u.username) throw new FleetConfigError(`--daemon ${raw}: give the daemon's base URL, without a path, query or credentials`);
  const port = u.port ? Number(u.port) : 80;
  const host = u.hostname.replace(/^\[|\]$/g, "");
  return { url: `http://${u.host}`, host, port, address: `${host}:${port}` };
}

/** The names a request may use for a model: its canonical name, and "name:latest" for an untagged one. */
export function modelAliases(name: string): string[] {
  const canonical = canonicalModelName(name);
  const aliases = new Set([name, canonical]);
  if (parseModelName(canonical).tag === "latest") aliases.add(`${canonical}:latest`);
  return [...aliases];
}

interface Catalogue {
  models: string[];
  /** Names seen but left out (characters HAProxy cannot carry). */
  skipped: string[];
}

/**
 * Which models a daemon serves: its `/v1/models` (loaded models and the models directories'), else Ollama's
 * `/api/tags`. Throws a FleetConfigError naming the daemon when it cannot be asked.
 */
export async function daemonCatalogue(url: string, options: { apiKey?: string; fetch?: typeof fetch; timeoutMs?: number } = {}): Promise<Catalogue> {
  const get = options.fetch ?? fetch;
  const headers: Record<string, string> = { accept: "application/json", ...(options.apiKey && { authorization: `Bearer ${options.apiKey}` }) };
  const ask = async (path: string): Promise<unknown> => {
    const response = await get(url + path, { headers, signal: AbortSignal.timeout(options.timeoutMs ?? 10_000) });
    if (response.status === 401) throw new FleetConfigError(`${url}${path} answered 401: the daemon has an API key; pass it with --api-key`);
    if (!response.ok) throw new FleetConfigError(`${url}${path} answered ${response.status}`);
    return response.json();
  };
  let names: string[];
  try {
    const body = (await ask("/v1/models")) as { data?: Array<{ id?: unknown }> };
    if (!Array.isArray(body?.data)) throw new FleetConfigError(`${url}/v1/models did not list models`);
    names = body.data.map((m) => m.id).filter((id): id is string => typeof id === "string");
  } catch (first) {
    if (first instanceof FleetConfigError && /401/.test(first.message)) throw first;
    try {
      const body = (await ask("/api/tags")) as { models?: Array<{ name?: unknown }> };
      if (!Array.isArray(body?.models)) throw new FleetConfigError(`${url}/api/tags did not list models`);
      names = body.models.map((m) => m.name).filter((n): n is string => typeof n === "string");
    } catch (second) {
      const why = (e: unknown) => (e instanceof Error ? (e.cause instanceof Error ? `${e.message}: ${e.cause.message}` : e.message) : String(e));
      throw new FleetConfigError(`cannot read the models of ${url}: ${why(first)}; ${why(second)}`);
    }
  }
  const models = new Set<string>();
  const skipped: string[] = [];
  for (const name of names) {
    if (SAFE_NAME.test(name)) models.add(canonicalModelName(name));
    else skipped.push(name);
  }
  return { models: [...models].sort(), skipped };
}

/** A HAProxy section name for a model: letters, digits and . _ : - only, unique in `taken`. */
function backendName(model: string, taken: Set<string>): string {
  const base = `model_${model.replace(/[^A-Za-z0-9._:-]/g, "_")}`;
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}_${i}`;
  taken.add(name);
  return name;
}

/** Comment lines of HAProxy's config: each paragraph (split on "\n") wrapped at 110 columns. */
const comment = (text: string, indent = ""): string => {
  const width = 110 - indent.length - 2;
  const lines: string[] = [];
  for (const paragraph of text.split("\n")) {
    if (/^\s/.test(paragraph)) {
      lines.push(paragraph); // a list item: as written
      continue;
    }
    let current = "";
    for (const word of paragraph.split(/ +/)) {
      if (current && current.length + 1 + word.length > width) {
        lines.push(current);
        current = word;
      } else current = current ? `${current} ${word}` : word;
    }
    lines.push(current);
  }
  return lines.map((line) => `${indent}#${line ? " " : ""}${line}`).join("\n");
};

/** A section's title line: "# ── title ───…", 110 columns. */
const banner = (title: string): string => `# ── ${title} `.padEnd(110, "─");

/** The whole config for a plan (pure: the fleet test and `haproxy -c` check its output). */
function renderHaproxyConfig(plan: FleetPlan): string {
  const { daemons } = plan;
  if (daemons.length === 0) throw new FleetConfigError("at least one --daemon is needed");
  const byModel = new Map<string, FleetDaemon[]>();
  for (const d of daemons) for (const m of d.models) byModel.set(m, [...(byModel.get(m) ?? []), d]);
  const models = [...byModel.keys()].sort();
  const taken = new Set<string>();
  const backends = new Map(models.map((m) => [m, backendName(m, taken)]));
  // Unique per HAProxy on this machine: two fleets with different listen ports never share a socket name.
  const socketTag = plan.bind.replace(/[^A-Za-z0-9]+/g, "_").replace(/^_+|_+$/g, "") || "fleet";
  const inner = (d: FleetDaemon) => `abns@kekahyde-${socketTag}-${d.name}`;
  const anyAgent = daemons.some((d) => d.agentPort !== null);
  const retries = (n: number) => Math.max(2, 2 * (n - 1));
  const out: string[] = [];
  const line = (s = "") => out.push(s);

  const serverLine = (d: FleetDaemon, model: string | null) =>
    `    server ${d.name} ${inner(d)} id ${d.id} track daemon_${d.name}/${d.name}` +
    (d.agentPort !== null ? ` agent-check agent-addr ${d.host} agent-port ${d.agentPort} agent-send "${model ?? ""}\\n"` : "");
  // With an agent, a daemon without a free slot has weight 0; these lines (the same pipe, no weight of their
  // own) take the requests when no daemon of the backend has one, and follow the daemon's line's state.
  const overflowLine = (d: FleetDaemon) => `    server ${d.name}_overflow ${inner(d)} id ${100 + d.id} backup track ${d.name}`;
  const balancedBackend = (name: string, members: FleetDaemon[], model: string | null, why: string) => {
    line(`backend ${name}`);
    line(comment(why, "    "));
    line("    balance leastconn");
    if (members.some((d) => d.agentPort !== null)) line("    option allbackups");
    line("    retry-on conn-failure empty-response 502 503");
    line(`    retries ${retries(members.length)}`);
    line("    option redispatch 1");
    line(`    default-server weight 100${anyAgent ? " agent-inter 500ms" : ""}`);
    for (const d of members) line(serverLine(d, model));
    for (const d of members) if (d.agentPort !== null) line(overflowLine(d));
    line();
  };

  // ── Header ─────────────────────────────────────────────────────────────────────────────────────────────
  line(comment(`HAProxy configuration for a fleet of Kekahyde daemons, written by \`kekahyde fleet-config\`${plan.command ? `:\n  ${plan.command}` : "."}`));
  line(comment("Check it with `haproxy -c -f FILE`; after editing or re-generating, `systemctl reload haproxy` (hitless)."));
  line(comment("What each part does, and what happens on failure: docs/scale-out.md. Needs HAProxy 2.6 or newer."));
  line("#");
  line(comment("Daemons:"));
  for (const d of daemons) {
    line(comment(`  ${d.name}  ${d.url}${d.agentPort !== null ? `  (agent on port ${d.agentPort})` : "  (no agent: start it with --agent-port for load feedback)"}`));
  }
  line(comment("Models (read from each daemon's /v1/models when this file was written; re-run after adding a model):"));
  if (models.length === 0) line(comment("  none: every request goes to the default backend"));
  for (const m of models) line(comment(`  ${m}  →  ${byModel.get(m)!.map((d) => d.name).join(", ")}`));
  for (const note of plan.notes ?? []) line(comment(`NOTE: ${note}`));
  line();

  // ── global / defaults ──────────────────────────────────────────────────────────────────────────────────
  line("global");
  line("    log stdout format raw local0 notice");
  line(
    comment(
      `A request is sent again to another daemon (a full or dead one's 503) only when HAProxy holds it whole: up to ${BUFFER_BYTES} bytes with its headers. ` +
        'A larger one (a long conversation) is still routed by its "model" when that comes first, as JSON clients write it, but not retried. ' +
        "A larger buffer retries larger requests, at a cost to every request: measured with HAProxy 2.6, about 3 ms at 256 KiB, 20 ms at 1 MiB.",
      "    ",
    ),
  );
  line(`    tune.bufsize ${BUFFER_BYTES}`);
  if (plan.statsSocket) line(`    stats socket ${plan.statsSocket} mode 600 level admin`);
  else line(comment("stats socket /run/haproxy/admin.sock mode 660 level admin   # Debian's default; `show servers state` there", "    "));
  line();
  line("defaults");
  line("    mode http");
  line("    log global");
  line("    option dontlognull");
  line("    timeout connect 2s");
  line(comment("A generation that is not streamed sends nothing for minutes: generous client and server timeouts.", "    "));
  line("    timeout client 30m");
  line("    timeout server 30m");
  line("    timeout http-request 60s");
  line("    timeout http-keep-alive 5s");
  line("    timeout check 2s");
  line(comment("A client that goes away closes the daemon's connection too, which cancels its generation there.", "    "));
  line("    option abortonclose");
  line(comment("Streamed tokens are small writes: pass each on at once instead of waiting to fill a packet.", "    "));
  line("    option http-no-delay");
  line();

  // ── frontend ───────────────────────────────────────────────────────────────────────────────────────────
  line("frontend kekahyde");
  line(`    bind ${plan.bind}`);
  line(comment("TLS: `bind ... ssl crt /etc/haproxy/kekahyde.pem` here; the daemons behind stay plain HTTP.", "    "));
  line("    option forwardfor");
  line(comment("Read the whole request body before routing (for \"model\" and \"id\"), as the retries need it anyway.", "    "));
  line("    option http-buffer-request");
  line(
    comment(
      "Every POST gets a request id HAProxy knows before a daemon answers: the client's own X-Request-Id when the daemon would accept it, else a new one. " +
        'The daemon uses it and returns it (X-Request-Id), and POST /stop {"id": ...} stops that request wherever it runs (the pipes at the end record where).',
      "    ",
    ),
  );
  line(`    http-request set-header X-Request-Id %[uuid] if METH_POST !{ req.hdr(x-request-id) -m reg ${REQUEST_ID_PATTERN} }`);
  line(comment('The model a request names: "model" of the seed routes, /v1 and /api (JSON bodies only).', "    "));
  line("    http-request set-var(txn.model) req.body,json_query('$.model') if METH_POST { req.hdr(content-type) -i -m sub json }");
  line(comment('POST /stop {"id"}: the daemon that request went to (1 = d1, ...), from the table the pipes fill.', "    "));
  line("    http-request set-var(txn.stop_daemon) req.body,json_query('$.id'),table_gpt0(fleet_requests) if METH_POST { path /stop }");
  for (const d of daemons) line(`    use_backend daemon_${d.name} if METH_POST { path /stop } { var(txn.stop_daemon) -m int ${d.id} }`);
  if (models.length > 0) line(comment("One backend per model name, holding the daemons that serve it.", "    "));
  for (const m of models) line(`    use_backend ${backends.get(m)} if { var(txn.model) -m str ${modelAliases(m).join(" ")} }`);
  line(comment("No model, a model no daemon listed, or any other route (/status, /api/tags, /health, ...): any daemon.", "    "));
  line("    default_backend fleet_default");
  line();

  // ── backends ───────────────────────────────────────────────────────────────────────────────────────────
  line(banner("Backends"));
  line(
    comment(
      "In every backend: the daemon with the fewest open requests, by weight, gets the next one (leastconn). " +
        "Each server line is the pipe to one daemon (listen daemon_dN, at the end) and follows that pipe's health check (track)" +
        (anyAgent
          ? ". With an agent, it also asks the daemon twice a second how loaded it is (agent-check): drain, or the share of its slots that are free, " +
            "for the model agent-send names (an empty line: the whole daemon). weight 100 is what the agent's percentages scale " +
            "(HAProxy's default of 1 would round them to 0). A daemon with no free slot has weight 0 and gets nothing new while another has one; " +
            "when none has, the dN_overflow lines (backup: the same daemons, unweighted, drained or down with dN) take the request, " +
            "which then waits in that daemon's queue, or is refused. (What HAProxy knows is up to half a second old: a burst in that time may find a daemon full that it thought free, or miss one that has just freed a slot.)\n"
          : ". Start the daemons with --agent-port and re-run fleet-config with it for load feedback.\n") +
        "A daemon refuses with 503 what it cannot queue (QUEUE_FULL) and what it gets while stopping (SHUTTING_DOWN), before any work; " +
        "a dead daemon shows as 502 or 503 from its pipe. The whole request is buffered, so HAProxy sends it again to another daemon " +
        "(redispatch), and a client sees 503 only when every daemon that has the model refused it. An answer already begun is never retried.",
    ),
  );
  line();
  for (const m of models) balancedBackend(backends.get(m)!, byModel.get(m)!, m, `${m}: ${byModel.get(m)!.map((d) => `${d.name} (${d.url})`).join(", ")}`);
  balancedBackend("fleet_default", daemons, null, "Requests without a model (or naming one no daemon listed): every daemon. Each answers from its own\nmodels: name the model to get the same answer from all.");

  line("backend fleet_requests");
  line(comment("Request id → the daemon it reached (gpt0: 1 for d1, ...), for POST /stop. Entries go an hour after their last use.", "    "));
  line("    stick-table type string len 128 size 100k expire 1h store gpt0");
  line();

  for (const d of daemons) {
    line(banner(`${d.name}: ${d.url}`));
    line(`listen daemon_${d.name}`);
    line(comment(`The pipe to ${d.name}: every request for it passes here as it is sent, so its id is recorded with ${d.name}'s number at that moment (a stick table's server would be stored only when the answer comes back), and POST /stop {"id"} for it comes straight here. retries 0: a refused connection comes back at once (503), and the backend sends the request to another daemon.`, "    "));
    line(`    bind ${inner(d)}`);
    line("    retries 0");
    line(
      comment(
        `${d.name}'s health, checked once here and followed by every server line that names ${d.name} (track). A daemon that stops answering, or answers /health with 503 (draining, shutting down), is out after two failed checks (about a second); two good ones bring it back. Host: localhost is a name every daemon accepts. ` +
          "And out at once when a connection to it is refused or times out (observe layer4, on-error mark-down): a daemon that has just died would otherwise keep its last weight until its checks fail, and take every retry meanwhile, while a live daemon that HAProxy still weighs 0 (full half a second ago) got none.",
        "    ",
      ),
    );
    line("    option httpchk");
    line("    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost");
    line("    http-check expect status 200");
    line(`    http-request track-sc0 req.hdr(x-request-id) table fleet_requests if METH_POST !{ path /stop } { req.hdr(x-request-id) -m found }`);
    line(`    http-request sc-set-gpt0(0) ${d.id} if METH_POST !{ path /stop } { req.hdr(x-request-id) -m found }`);
    line(comment("Which daemon answered (remove it if clients should not know).", "    "));
    line(`    http-response set-header X-Kekahyde-Daemon ${d.name}`);
    line(comment("A stop still reaches a daemon that is out (draining, or thought dead): it may be running that request.", "    "));
    line("    force-persist if { path /stop }");
    line(`    use-server ${d.name} if { path /stop }`);
    line(`    server ${d.name} ${d.address} check inter 1s fastinter 250ms downinter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down`);
    line();
  }
  return out.join("\n");
}

/** Asks every daemon for its catalogue and writes the config (see FleetConfigOptions). */
export async function fleetConfig(options: FleetConfigOptions & { command?: string }): Promise<string> {
  const bind = bindAddress(options.listen);
  if (options.daemons.length === 0) throw new FleetConfigError("at least one --daemon URL is needed");
  const parsed = options.daemons.map(parseDaemonUrl);
  const seen = new Set<string>();
  for (const p of parsed) {
    if (seen.has(p.url)) throw new FleetConfigError(`--daemon ${p.url} is given twice`);
    seen.add(p.url);
  }
  const catalogues = await Promise.all(parsed.map((p) => daemonCatalogue(p.url, { apiKey: options.apiKey, fetch: options.fetch })));
  const notes: string[] = [];
  const daemons: FleetDaemon[] = parsed.map((p, i) => {
    const agent = options.agentPort === undefined ? null : typeof options.agentPort === "function" ? options.agentPort(p.url) : options.agentPort;
    if (agent !== null && !(Number.isInteger(agent) && agent >= 1 && agent <= 65535)) throw new FleetConfigError(`the agent port of ${p.url} must be from 1 to 65535, got ${agent}`);
    for (const name of catalogues[i].skipped) notes.push(`${p.url} lists "${name}", a name HAProxy's config cannot carry: left out`);
    return { name: `d${i + 1}`, id: i + 1, url: p.url, address: p.address, host: p.host, agentPort: agent, models: catalogues[i].models };
  });
  return renderHaproxyConfig({ bind, daemons, statsSocket: options.statsSocket, notes, command: options.command });
}

const FLEET_CONFIG_HELP = `Usage: kekahyde fleet-config --listen HOST:PORT --daemon URL [--daemon URL ...] [options]

Prints a complete, commented haproxy.cfg (HAProxy 2.6+) that puts several Kekahyde daemons behind one
address: one backend per model name (read now from each daemon's /v1/models) holding the daemons that
serve it, health checks, load feedback from each daemon's agent, retries of a full daemon's 503 on
another, and POST /stop {"id"} routed to the daemon that runs that request. See docs/scale-out.md.

  kekahyde fleet-config --listen 0.0.0.0:8080 --daemon http://10.0.0.5:3000 --daemon http://10.0.0.6:3000 \\
      --agent-port 3001 > /etc/haproxy/haproxy.cfg && haproxy -c -f /etc/haproxy/haproxy.cfg

Options:
  --listen HOST:PORT    where HAProxy listens (required)
  --daemon URL          a daemon's base URL, http://HOST:PORT (required; repeat for each daemon)
  --agent-port PORT     the daemons' --agent-port: once for all, or once per --daemon, in the same order
                        (none: no load feedback, HAProxy balances by open requests only)
  --api-key KEY         the daemons' API key, to read their models (also KEKAHYDE_API_KEY)
  --stats-socket PATH   write HAProxy's admin socket line (default: left commented out)
  --help                this text
`;

/** The verb: parses argv (after `fleet-config`), prints the config, returns the exit code. */
export async function runFleetConfig(argv: string[], io: { stdout: (s: string) => void; stderr: (s: string) => void }): Promise<number> {
  let values: { listen?: string; daemon?: string[]; "agent-port"?: string[]; "api-key"?: string; "stats-socket"?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        listen: { type: "string" },
        daemon: { type: "string", multiple: true },
        "agent-port": { type: "string", multiple: true },
        "api-key": { type: "string" },
        "stats-socket": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    io.stderr(`kekahyde fleet-config: ${(e as Error).message}\n\n${FLEET_CONFIG_HELP}`);
    return 2;
  }
  if (values.help) {
    io.stdout(FLEET_CONFIG_HELP);
    return 0;
  }
  const usage = (message: string) => {
    io.stderr(`kekahyde fleet-config: ${message}\nRun kekahyde fleet-config --help for the options.\n`);
    return 2;
  };
  if (!values.listen) return usage("--listen HOST:PORT is required");
  const daemons = values.daemon ?? [];
  if (daemons.length === 0) return usage("at least one --daemon URL is required");
  const ports = (values["agent-port"] ?? []).map((p) => (/^\d{1,5}$/.test(p) ? Number(p) : NaN));
  if (ports.some((p) => !(p >= 1 && p <= 65535))) return usage(`--agent-port must be a port from 1 to 65535, got ${values["agent-port"]!.join(", ")}`);
  if (ports.length > 1 && ports.length !== daemons.length) return usage(`give --agent-port once for all daemons, or once per --daemon (${daemons.length}), not ${ports.length} times`);
  const agentPort = ports.length === 0 ? undefined : ports.length === 1 ? ports[0] : (url: string) => ports[daemons.map((d) => parseDaemonUrl(d).url).indexOf(url)];
  const apiKey = values["api-key"] ?? (process.env.KEKAHYDE_API_KEY || undefined);
  const shown = ["kekahyde fleet-config", ...argv.map((a, i) => (argv[i - 1] === "--api-key" ? "KEY" : /\s/.test(a) ? JSON.stringify(a) : a))].join(" ");
  try {
    io.stdout(`${await fleetConfig({ listen: values.listen, daemons, agentPort, apiKey, statsSocket: values["stats-socket"], command: shown })}\n`);
    return 0;
  } catch (e) {
    if (e instanceof FleetConfigError) {
      io.stderr(`kekahyde fleet-config: ${e.message}\n`);
      return /^--|at least one|given twice|agent port/.test(e.message) ? 2 : 1;
    }
    throw e;
  }
}
