import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeToolModel, type ToolTemplateFlavour } from "../../testing/gguf/toolModel.ts";
import { FIXTURES } from "../../testing/fixtures.ts";

/** Changes whenever the code that writes tool models changes, so a stale cached fixture is never used. */
const HASH = createHash("sha256")
  .update(["testing/gguf/toolModel.ts", "src/gguf/charModel.ts", "src/gguf/writer.ts", "src/gguf/format.ts", "src/gguf/llamaMetadata.ts"].map((f) => readFileSync(new URL(`../../${f}`, import.meta.url))).join("\0"))
  .digest("hex")
  .slice(0, 12);

/** The tool model of a flavour (testing/gguf/toolModel.ts), written once per checkout; returns its path. */
export async function toolModel(flavour: ToolTemplateFlavour): Promise<string> {
  const path = join(FIXTURES, `${flavour.name}-${HASH}.gguf`);
  if (!(await stat(path).then((s) => s.size > 0, () => false))) {
    await mkdir(FIXTURES, { recursive: true });
    await writeToolModel(`${path}.${process.pid}.tmp`, flavour);
    await rename(`${path}.${process.pid}.tmp`, path);
  }
  return path;
}
