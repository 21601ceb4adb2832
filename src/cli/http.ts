import { parseServeArgs } from "../config.ts";

/** How the client commands reach the daemon, and how they read its answers. */

/** A failure to report on stderr as `kekahyde VERB: message`, exiting 1. */
export class ClientError extends Error {
  constructor(
    message: string,
    /** The HTTP status the daemon answered with, when it answered. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface Target {
  base: string;
  headers: Record<string, string>;
}

/** The daemon's address and API key from --host/--port/--api-key/--config, KEKAHYDE_* and the defaults, as `serve` reads them. */
export function target(values: Record<string, unknown>): Target {
  const shared: string[] = [];
  for (const flag of ["host", "port", "api-key", "config"]) if (typeof values[flag] === "string") shared.push(`--${flag}`, values[flag]);
  const { config } = parseServeArgs(shared);
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host;
  return { base: `http://${host}:${config.port}`, headers: config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {} };
}

/** The message of an error body in any of the daemon's shapes: Kekahyde's `{message}`, Ollama's `{error}`, OpenAI's `{error: {message}}`. */
function errorMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { message?: unknown; error?: unknown };
    if (typeof body.message === "string") return body.message;
    if (typeof body.error === "string") return body.error;
    if (body.error && typeof (body.error as { message?: unknown }).message === "string") return (body.error as { message: string }).message;
  } catch {
    // not JSON: show it as it is
  }
  return text;
}

/** One request; a refused connection or an error status becomes a ClientError with a message for people. */
export async function call(t: Target, method: string, path: string, body?: unknown, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(t.base + path, {
      method,
      signal,
      headers: body === undefined ? { ...t.headers, ...headers } : { ...t.headers, ...headers, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    throw new ClientError(
      cause === "ECONNREFUSED" || cause === "ENOTFOUND" || cause === "EHOSTUNREACH"
        ? `No Kekahyde daemon answers at ${t.base}. Start one with \`kekahyde serve\` (or \`npm start\`), or point --host/--port at it.`
        : `Could not reach ${t.base}: ${(e as Error).message}`,
    );
  }
  if (!res.ok) throw new ClientError(`${res.status}: ${errorMessage(await res.text())}`, res.status);
  return res;
}

/** GET or POST a JSON answer. */
export async function json<T>(t: Target, method: string, path: string, body?: unknown): Promise<T> {
  return (await (await call(t, method, path, body)).json()) as T;
}

/** The objects of a newline-delimited JSON body, each as soon as its line is complete. */
export async function* ndjson(res: Response): AsyncGenerator<Record<string, unknown>> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) yield JSON.parse(line) as Record<string, unknown>;
    }
  }
  pending += decoder.decode();
  if (pending.trim()) yield JSON.parse(pending) as Record<string, unknown>;
}
