import { readFileSync } from "node:fs";
import { ConfigError, parseServeArgs, printableConfig, serveHelp } from "./config.ts";
import { CLIENT_HELP, CLIENT_VERBS, clientVerbHelp, runClientVerb, type ClientVerb } from "./cli/client.ts";

const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

const USAGE = `Usage: kekahyde <command> [options]

Commands:
  serve     run the daemon (default when no command is given)
  fleet-config   print an HAProxy config for several daemons behind one address (docs/scale-out.md)
  list, ps, show, run, status, load, stop, unload   talk to a running daemon

Run "kekahyde serve --help" for the daemon's options, "kekahyde VERB --help" for a command's.

${CLIENT_HELP}`;

async function serve(argv: string[]): Promise<void> {
  const { config, help, version, printConfig } = parseServeArgs(argv);
  if (help) return void console.log(serveHelp());
  if (version) return void console.log(VERSION);
  if (printConfig) return void console.log(JSON.stringify(printableConfig(config), null, 2));
  // Imported here, so that the client commands start without loading the daemon (and its engine binding).
  const [{ startDaemon }, { createLogger }] = await Promise.all([import("./daemon.ts"), import("./log.ts")]);
  const log = createLogger(config.logLevel, undefined, config.logFormat);
  const daemon = await startDaemon(config, { log });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      log.warn({ event: "forced_exit", signal }, "second signal: exiting now");
      process.exit(130);
    }
    log.info({ event: "signal", signal }, `received ${signal}`);
    daemon.close().then(
      () => log.flush(() => process.exit(0)),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv;
  if (first === undefined || first.startsWith("-")) {
    if (first === "--version" || first === "-v") return void console.log(VERSION);
    if (first === "--help" || first === "-h") {
      console.log(USAGE);
      console.log();
      return void console.log(serveHelp());
    }
    return serve(argv);
  }
  if (first === "serve") return serve(rest);
  if (first === "fleet-config") {
    const { runFleetConfig } = await import("./fleet/haproxyConfig.ts");
    process.exitCode = await runFleetConfig(rest, { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) });
    return;
  }
  if ((CLIENT_VERBS as readonly string[]).includes(first)) return runClientVerb(first as ClientVerb, rest);
  if (first === "help") {
    if (rest[0] === "serve") return void console.log(serveHelp());
    if ((CLIENT_VERBS as readonly string[]).includes(rest[0])) return void console.log(clientVerbHelp(rest[0] as ClientVerb));
    return void console.log(`${USAGE}\n\n${serveHelp()}`);
  }
  throw new ConfigError(`unknown command "${first}"\n\n${USAGE}`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof ConfigError) {
    console.error(`kekahyde: ${e.message}`);
    process.exit(2);
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === "EADDRINUSE") console.error(`kekahyde: the address is already in use (${err.message}). Pick another with --port or KEKAHYDE_PORT.`);
  else console.error(`kekahyde: ${err.message ?? String(e)}`);
  process.exit(1);
});
