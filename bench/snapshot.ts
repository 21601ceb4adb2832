// How the bench and the soak start the daemon: from a compiled snapshot of src/ (what `npm run build` makes,
// in a temporary folder, so that what is measured is what an installed daemon runs, without touching dist/),
// or with `--source` from the TypeScript sources through tsx, whose loader adds a thread and ~15-20 MB to every
// process (the daemon's and each engine process's, since the engine host runs the way the daemon does).
// `--patch FILE` (repeatable) applies a patch to the snapshot only (never to src/): a fix measured before it
// lands. A patch that src/ already contains is skipped and said so. `--src-from DIR` compiles DIR/src (and
// DIR/bench/inprocess-daemon.ts) instead: another checkout, e.g. a `git worktree` of an older commit, measured
// by this bench with this checkout's node_modules.
import { execFileSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Which engine a Kekahyde daemon runs: one process per model (the daemon as shipped), or in-process. */
export type EngineKind = "process" | "in-process";

export interface Launch {
  /** Node's arguments before `serve`, for each kind of daemon. */
  argv: Record<EngineKind, string[]>;
  /** What runs, for the docs. */
  description: string;
  cleanup(): void;
}

const quiet = (cmd: string, argv: string[], cwd = ROOT) => execFileSync(cmd, argv, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 24 });

function srcCommit(root = ROOT): string {
  try {
    let commit = quiet("git", ["rev-parse", "--short", "HEAD"], root).trim();
    if (quiet("git", ["status", "--porcelain", "--", "src"], root).trim()) commit += " with uncommitted changes in src/";
    return commit;
  } catch {
    return "unknown";
  }
}

/** Reads `--source`, every `--patch FILE` and `--src-from DIR` from argv. */
export function launchOptions(argv: readonly string[]): { source: boolean; patches: string[]; srcFrom: string | null } {
  const patches: string[] = [];
  let srcFrom: string | null = null;
  argv.forEach((a, i) => {
    if (a === "--patch" && argv[i + 1]) patches.push(argv[i + 1]);
    if (a === "--src-from" && argv[i + 1]) srcFrom = resolve(argv[i + 1]);
  });
  return { source: argv.includes("--source"), patches, srcFrom };
}

export function prepareLaunch({ source, patches, srcFrom = null }: { source: boolean; patches: string[]; srcFrom?: string | null }): Launch {
  const from = srcFrom ?? ROOT;
  if (source && srcFrom) throw new Error("--src-from needs the compiled snapshot: drop --source");
  const tsx = (file: string) => ["--import", "tsx", join(ROOT, file)];
  if (source) {
    if (patches.length) throw new Error("--patch needs the compiled snapshot: drop --source");
    return { argv: { process: tsx("src/cli.ts"), "in-process": tsx("bench/inprocess-daemon.ts") }, description: `the TypeScript sources through tsx (--source; src/ at ${srcCommit()})`, cleanup: () => {} };
  }
  const dir = mkdtempSync(join(tmpdir(), "kekahyde-bench-"));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    // A copy first, so that the snapshot is one moment of src/ (others may be editing it) and patches apply there.
    cpSync(join(from, "src"), join(dir, "src"), { recursive: true });
    mkdirSync(join(dir, "bench"));
    copyFileSync(join(from, "bench", "inprocess-daemon.ts"), join(dir, "bench", "inprocess-daemon.ts"));
    symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
    copyFileSync(join(ROOT, "package.json"), join(dir, "package.json"));
    const applied: string[] = [];
    for (const patch of patches) {
      const file = resolve(patch);
      const name = relative(ROOT, file);
      try {
        quiet("git", ["apply", "--check", "-R", file], dir);
        applied.push(`${name} (already in src/, skipped)`);
        continue;
      } catch {
        // not applied yet
      }
      quiet("git", ["apply", file], dir);
      applied.push(name);
    }
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        extends: join(ROOT, "tsconfig.json"),
        compilerOptions: { noEmit: false, outDir: join(dir, "out"), rootDir: dir, rewriteRelativeImportExtensions: true, sourceMap: false },
        include: [join(dir, "src"), join(dir, "bench", "inprocess-daemon.ts")],
        exclude: [],
      }),
    );
    console.log(`compiling src/ into ${dir} ...`);
    let typeErrors = 0;
    try {
      quiet(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", join(dir, "tsconfig.json")]);
    } catch (e) {
      // tsc emits despite type errors (others may be mid-edit in src/); what matters is that it emitted.
      typeErrors = ((e as { stdout?: string }).stdout?.match(/error TS/g) ?? []).length;
    }
    const out = join(dir, "out");
    if (!existsSync(join(out, "src", "cli.js")) || !existsSync(join(out, "bench", "inprocess-daemon.js"))) throw new Error("compiling src/ failed; run with --source");
    // What the compiled code reads beside itself: the package's manifest and node_modules, the live page.
    symlinkSync(join(ROOT, "node_modules"), join(out, "node_modules"), "dir");
    copyFileSync(join(ROOT, "package.json"), join(out, "package.json"));
    mkdirSync(join(out, "src", "server", "inspector"), { recursive: true });
    copyFileSync(join(from, "src", "server", "inspector", "page.html"), join(out, "src", "server", "inspector", "page.html"));
    // As `npm run build` does: the daemon and the engine process each start from a one-file bundle. Not for
    // --src-from: code older than the bundle (a dynamic import of node-llama-cpp) hangs bundled.
    const bundled = !srcFrom;
    if (bundled) quiet(process.execPath, [join(ROOT, "scripts", "bundle.mjs"), join(out, "src")]);
    const notes = [typeErrors ? `tsc reported ${typeErrors} type errors` : "", applied.length ? `with ${applied.join(", ")} applied` : "", bundled ? "bundled as `npm run build` does" : "not bundled"].filter(Boolean).join("; ");
    return {
      argv: { process: [join(out, "src", bundled ? "cli.bundle.mjs" : "cli.js")], "in-process": [join(out, "bench", "inprocess-daemon.js")] },
      description: `compiled JavaScript (src/ at ${srcCommit(from)}${srcFrom ? ` from another checkout (--src-from)` : ""}, compiled by the bench${notes ? `; ${notes}` : ""})`,
      cleanup,
    };
  } catch (e) {
    cleanup();
    throw e;
  }
}
