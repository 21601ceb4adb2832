// Bundles a compiled entry module and everything it imports, node_modules included, into one ES module.
// Node then reads, resolves and compiles one file instead of hundreds: importing node-llama-cpp in an engine
// process took ~580 ms unbundled and ~200 ms bundled here, and every engine process pays it when it starts.
//
// Every bundled module keeps its own location: `import.meta.url`, and CommonJS's `__dirname` and
// `__filename`, become that module's original file, computed from the bundle's own URL at run time (so a
// checkout moved after `npm install` still works). What a module finds beside itself still resolves:
// node-llama-cpp's binaries and its binary test, our inspector page, package.json. Native addons and
// node-llama-cpp's per-platform binary packages stay outside and load from node_modules as before.
import { readFile } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { pathToFileURL } from "node:url";

const IMPORT_META_URL = /\bimport\.meta\.url\b/g;
const uses = (name) => new RegExp(`\\b${name}\\b`);
const declares = (name) => new RegExp(`\\b(?:const|let|var|function)\\s+${name}\\b`);

// Top-level code of the bundle, in scope for every module in it.
const BANNER = [
  'import { createRequire as __kekahydeCreateRequire } from "node:module";',
  'import { fileURLToPath as __kekahydeFileURLToPath } from "node:url";',
  "const require = __kekahydeCreateRequire(import.meta.url);",
  "const __kekahydeUrl = (rel) => new URL(rel, import.meta.url).href;",
  "const __kekahydePath = (rel) => __kekahydeFileURLToPath(new URL(rel, import.meta.url));",
].join("\n");

/** The compiled entries `npm run build` bundles, relative to its output folder, and each one's bundle. */
export const BUNDLED_ENTRIES = ["cli.js", "engine/process/host.js"];
export const bundleOf = (entry) => entry.replace(/\.js$/, ".bundle.mjs");

/** Bundles every entry of BUNDLED_ENTRIES in a compiled output folder (absolute path). */
export async function bundleAll(outDir) {
  for (const entry of BUNDLED_ENTRIES) await bundle({ entry: join(outDir, entry), outfile: join(outDir, bundleOf(entry)) });
}

/** @param {{ entry: string, outfile: string }} options absolute paths */
export async function bundle({ entry, outfile }) {
  const esbuild = await import("esbuild");
  const outDir = dirname(outfile);
  const rel = (path) => {
    const r = relative(outDir, path).split(sep).join("/");
    return JSON.stringify(r.startsWith(".") ? r : `./${r}`);
  };
  await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    banner: { js: BANNER },
    external: ["*.node", "@node-llama-cpp/*", "@reflink/*"],
    logLevel: "warning",
    plugins: [
      {
        name: "own-location",
        setup(build) {
          build.onLoad({ filter: /\.(?:m|c)?js$/ }, async (args) => {
            let source = await readFile(args.path, "utf8");
            const before = source;
            source = source.replace(IMPORT_META_URL, `__kekahydeUrl(${rel(args.path)})`);
            const shims = [];
            if (uses("__dirname").test(source) && !declares("__dirname").test(source)) shims.push(`var __dirname = __kekahydePath(${rel(dirname(args.path))});`);
            if (uses("__filename").test(source) && !declares("__filename").test(source)) shims.push(`var __filename = __kekahydePath(${rel(args.path)});`);
            if (source === before && shims.length === 0) return undefined;
            return { contents: shims.join(" ") + source, loader: "js" };
          });
        },
      },
    ],
  });
}

// `node scripts/bundle.mjs OUTDIR`: bundleAll, for callers that cannot await (bench/snapshot.ts).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv.length === 3) {
  await bundleAll(process.argv[2]);
}
