import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { describe, it } from "node:test";
import { readGgufFileInfo } from "node-llama-cpp";
import { warmUpGgufParser } from "../src/engine/loaderWarmUp.ts";

/**
 * The spare engine process's warm-up of node-llama-cpp's GGUF parser (what it gains is measured by
 * bench/loader-warmup.ts, not here): the header it writes must be one node-llama-cpp reads whole, or the
 * warm-up would fail unseen and warm nothing; and it must leave nothing behind, whatever happens.
 */
describe("the loader's warm-up", () => {
  const live = () => new AbortController().signal;

  it("writes a header that node-llama-cpp's parser reads whole, with the vocabulary asked for", async () => {
    const vocabulary = async (tokens?: number) => {
      let read = -1;
      await warmUpGgufParser(
        async (path, signal) => {
          const info = await readGgufFileInfo(path, { sourceType: "filesystem", signal });
          assert.equal(info.tensorInfo?.length, 0);
          read = (info.metadata.tokenizer?.ggml?.tokens as unknown[] | undefined)?.length ?? 0;
        },
        live(),
        tokens,
      );
      return read;
    };
    assert.equal(await vocabulary(), 8_000);
    assert.equal(await vocabulary(300), 300);
  });

  it("leaves no file behind: after the parse, after a parse that fails, and reads nothing once aborted", async () => {
    const seen: string[] = [];
    await warmUpGgufParser((path) => Promise.resolve(void seen.push(path)), live(), 10);
    await assert.rejects(
      warmUpGgufParser((path) => {
        seen.push(path);
        return Promise.reject(new Error("the parser failed"));
      }, live(), 10),
      /the parser failed/,
    );
    assert.equal(seen.length, 2);
    for (const path of seen) assert.equal(existsSync(dirname(path)), false, `${dirname(path)} is removed`);

    const aborted = new AbortController();
    aborted.abort();
    let read = false;
    await warmUpGgufParser(() => Promise.resolve(void (read = true)), aborted.signal, 10);
    assert.equal(read, false);
  });
});
