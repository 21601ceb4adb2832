import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** What every bench needs of a daemon it started as a child process, and of its engine processes. */

/** Process ids whose parent is `pid` (Linux /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) out.push(Number(entry));
    } catch {
      // it has just ended
    }
  }
  return out;
}

/**
 * The URL a daemon started with `--log-format json` listens on, from its "listening" log line; the rest of
 * its log is read and dropped, so that it never waits on a full pipe. Rejects with `exitMessage` if it
 * exits first.
 */
export function listeningUrl(child: ChildProcess, exitMessage: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = /"url":"(http:[^"]+)"/.exec(buf);
      if (m) {
        child.stdout!.off("data", onData);
        child.stdout!.resume();
        resolve(m[1]);
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", () => reject(new Error(exitMessage)));
  });
}
