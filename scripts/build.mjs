// npm run build (also run by npm install/ci through "prepare"): compiles src/ to dist/ with tsc and copies
// the assets the code reads at run time, so the daemon runs on plain Node without a TypeScript loader.
import { execFileSync } from "node:child_process";
import { cpSync, rmSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
rmSync(new URL("../dist", import.meta.url), { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], { stdio: "inherit" });
cpSync(new URL("../src/server/inspector/page.html", import.meta.url), new URL("../dist/server/inspector/page.html", import.meta.url));
