import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeEmbeddingModel, writeRerankModel } from "../../testing/gguf/jobModels.ts";
import { FIXTURES } from "../../testing/fixtures.ts";

/** The generated embedding and reranking models (testing/gguf/jobModels.ts), written once per checkout. */

const WRITER_HASH = createHash("sha256")
  .update(["testing/gguf/jobModels.ts", "src/gguf/randomModel.ts", "src/gguf/llamaMetadata.ts", "src/gguf/writer.ts", "src/gguf/format.ts"].map((f) => readFileSync(new URL(`../../${f}`, import.meta.url))).join("\0"))
  .digest("hex")
  .slice(0, 12);

const pending = new Map<string, Promise<string>>();

function cached(name: string, write: (path: string) => Promise<unknown>): Promise<string> {
  const path = join(FIXTURES, `${name}-${WRITER_HASH}.gguf`);
  let p = pending.get(path);
  if (!p) {
    p = (async () => {
      await mkdir(FIXTURES, { recursive: true });
      if (!(await stat(path).then((s) => s.size > 0, () => false))) {
        const tmp = `${path}.${process.pid}.tmp`;
        await write(tmp);
        await rename(tmp, path);
      }
      return path;
    })();
    pending.set(path, p);
  }
  return p;
}

export const embeddingModel = () => cached("kekahyde-embed-tiny", (p) => writeEmbeddingModel(p));
export const rerankModel = () => cached("kekahyde-rerank-tiny", (p) => writeRerankModel(p));
