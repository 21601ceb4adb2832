import type { ChildProcess } from "node:child_process";

/** What every bench needs of a daemon it started as a child process, and of its engine processes. */

/** Process ids whose parent is `pid`: the tests' helper, one reading of /proc for both. */
export { childrenOf } from "../testing/daemonProcess.ts";

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
