// npm run build (also run by npm install/ci through "prepare"): compiles src/ to dist/ with tsc and copies
// the assets the code reads at run time, so the daemon runs on plain Node without a TypeScript loader; then
// bundles the daemon's entry and the engine process's entry, each with what it imports, into one file each
// (scripts/bundle.mjs: a faster start). dist/ without the bundles still runs.
//
// `--out DIR`: another folder of the checkout's root instead of dist/ (test/build.test.ts); it must sit in the
// root, as dist/ does, for `../package.json` and node_modules to resolve from it.
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleAll } from "./bundle.mjs";

const require = createRequire(import.meta.url);
const root = fileURLToPath(new URL("..", import.meta.url));
const outArg = process.argv.indexOf("--out");
const name = outArg >= 0 ? process.argv[outArg + 1] : "dist";
if (!name || !/^[\w.-]+$/.test(name) || name === "." || name === "..") throw new Error(`--out must name one folder in the checkout's root, not ${JSON.stringify(name)}`);
const out = join(root, name);

rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(root, "tsconfig.build.json"), "--outDir", out], { stdio: "inherit" });
cpSync(join(root, "src", "server", "inspector", "page.html"), join(out, "server", "inspector", "page.html"));
await bundleAll(out);
