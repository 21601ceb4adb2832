import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SKIP_CHAR_MODEL, SLOW_CHAR_MODEL, TINY_CHAR_MODEL, writeCharModel, type CharModelShape } from "../src/gguf/charModel.ts";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "test", ".fixtures");

const pending = new Map<string, Promise<string>>();

/** Changes whenever the code that writes models changes, so a stale cached fixture is never used. */
const WRITER_HASH = createHash("sha256")
  .update(["charModel.ts", "writer.ts", "format.ts", "llamaMetadata.ts", "randomModel.ts"].map((f) => readFileSync(new URL(`../src/gguf/${f}`, import.meta.url))).join("\0"))
  .digest("hex")
  .slice(0, 12);

/** Writes a generated model once per checkout (test/.fixtures is ignored by git) and returns its path. */
export function fixtureModel(shape: CharModelShape): Promise<string> {
  const path = join(FIXTURES, `${shape.name}-${WRITER_HASH}.gguf`);
  let p = pending.get(path);
  if (!p) {
    p = (async () => {
      await mkdir(FIXTURES, { recursive: true });
      const exists = await stat(path).then((s) => s.size > 0, () => false);
      if (!exists) {
        const tmp = `${path}.${process.pid}.tmp`;
        await writeCharModel(tmp, shape);
        const { rename } = await import("node:fs/promises");
        await rename(tmp, path);
      }
      return path;
    })();
    pending.set(path, p);
  }
  return p;
}

export const tinyModel = () => fixtureModel(TINY_CHAR_MODEL);
export const slowModel = () => fixtureModel(SLOW_CHAR_MODEL);
export const skipModel = () => fixtureModel(SKIP_CHAR_MODEL);

/** Writes arbitrary bytes as a fixture file and returns its path. */
export async function fixtureFile(name: string, bytes: Uint8Array): Promise<string> {
  await mkdir(FIXTURES, { recursive: true });
  const path = join(FIXTURES, name);
  await writeFile(path, bytes);
  return path;
}
