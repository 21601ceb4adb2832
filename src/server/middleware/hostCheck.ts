import type { Middleware } from "koa";
import { KekahydeError } from "../../errors.ts";
import { hostnameOf, isLoopbackName } from "../addresses.ts";

/**
 * Refuses requests whose Host header is not a loopback name, the address the daemon listens on, or a name
 * allowed with --allowed-hosts. This defeats DNS rebinding: a page on evil.example that rebinds its name to
 * 127.0.0.1 still sends "Host: evil.example", and is turned away (cf. Ollama CVE-2024-28224).
 */
export function hostCheck(listenHost: string, allowedHosts: readonly string[]): Middleware {
  const allowed = new Set([...allowedHosts.map((h) => h.toLowerCase()), hostnameOf(listenHost)]);
  allowed.delete("0.0.0.0");
  allowed.delete("::");
  return async (ctx, next) => {
    const header = ctx.get("Host");
    const hostname = header ? hostnameOf(header) : "";
    if (!hostname || !(isLoopbackName(hostname) || allowed.has(hostname))) {
      throw new KekahydeError(
        "FORBIDDEN_HOST",
        header
          ? `Host "${header}" is not allowed. Use 127.0.0.1 or localhost, or start the daemon with --allowed-hosts ${hostname || "NAME"}.`
          : "The request has no Host header.",
      );
    }
    await next();
  };
}
