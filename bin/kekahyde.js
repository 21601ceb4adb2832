#!/usr/bin/env node
// The installed `kekahyde` command. It runs the compiled dist/ (built by `npm install` through "prepare")
// on plain Node; when dist/ is missing or older than src/ (a checkout being edited), it runs the TypeScript
// sources through tsx instead, so what runs is always the current code.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const compiled = join(root, "dist", "cli.js");

function newest(dir) {
  let latest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
  }
  return latest;
}

if (existsSync(compiled) && statSync(compiled).mtimeMs >= newest(join(root, "src"))) {
  // The build's one-file bundle of the same code starts faster (scripts/bundle.mjs); dist/ alone also runs.
  const bundled = join(root, "dist", "cli.bundle.mjs");
  await import(existsSync(bundled) && statSync(bundled).mtimeMs >= statSync(compiled).mtimeMs ? bundled : compiled);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli.ts");
}
