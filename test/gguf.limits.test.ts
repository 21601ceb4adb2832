import assert from "node:assert/strict";
import { link, mkdir, mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createCatalogue } from "../src/catalogue/index.ts";
import { GgufValueType } from "../src/gguf/format.ts";
import { estimateModelMemory, VOCABULARY_BYTES_PER_TOKEN } from "../src/gguf/memory.ts";
import { GgufTooLargeError, HEADER_READS_AT_ONCE, headerReadsRunning, readGgufInfo } from "../src/gguf/reader.ts";
import { randomLlamaSpec, type LlamaShape } from "../src/gguf/randomModel.ts";
import { str, writeGguf } from "../src/gguf/writer.ts";

// Issue: eight valid GGUF files, each with a metadata array of 16 million one-byte strings, asked for by name
// at once, took the daemon to 4.4 GB and a V8 out-of-memory crash: the reader kept every item. And the same
// kind of file, with a 5-million-token vocabulary, was estimated at a sixth of what its engine took.

const MIB = 1024 * 1024;
/** A llama small enough to write in milliseconds (~100 kB). */
const SMALL: LlamaShape = { name: "limits-small", embeddingLength: 64, blockCount: 1, feedForwardLength: 128, headCount: 2, headCountKv: 1, contextLength: 256, vocabSize: 400 };
const MARKER_KEY = "kekahyde.test.marker";

/** Raw bytes of GGUF metadata entries, produced in chunks so that a 150 MB array never sits in memory whole. */
interface RawEntries {
  count: number;
  byteLength: number;
  chunks: () => Iterable<Buffer>;
}

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u64 = (v: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
const ggufString = (s: string) => {
  const bytes = Buffer.from(s, "utf8");
  return Buffer.concat([u64(bytes.length), bytes]);
};

/** One string-array entry `key` of `count` items, item i being `item(i)`. */
function stringArrayEntry(key: string, count: number, item: (i: number) => string): RawEntries {
  const head = Buffer.concat([ggufString(key), u32(GgufValueType.ARRAY), u32(GgufValueType.STRING), u64(count)]);
  let itemBytes = 0;
  for (let i = 0; i < count; i++) itemBytes += 8 + Buffer.byteLength(item(i), "utf8");
  return {
    count: 1,
    byteLength: head.length + itemBytes,
    *chunks() {
      yield head;
      const perChunk = 1 << 18;
      for (let start = 0; start < count; start += perChunk) {
        const texts = Array.from({ length: Math.min(perChunk, count - start) }, (_, k) => item(start + k));
        const chunk = Buffer.alloc(texts.reduce((n, text) => n + 8 + Buffer.byteLength(text, "utf8"), 0));
        let at = 0;
        for (const text of texts) {
          const length = chunk.write(text, at + 8, "utf8");
          chunk.writeUInt32LE(length, at); // the high half of the u64 length stays 0
          at += 8 + length;
        }
        yield chunk;
      }
    },
  };
}

/**
 * Writes a small valid llama whose metadata also holds `extra` (raw entries), without `drop`ped keys. The model
 * is written with a marker entry sized so that swapping it for `extra` keeps the tensor data aligned; the
 * marker's bytes are then replaced by the entries, streamed.
 */
async function writeLlamaWith(path: string, extra: RawEntries, drop: readonly string[] = []): Promise<void> {
  const fixed = 8 + MARKER_KEY.length + 4 + 8;
  const markerLength = ((((extra.byteLength - fixed) % 32) + 32) % 32) || 32;
  const spec = randomLlamaSpec(SMALL, "Q8_0");
  const metadata = [...spec.metadata.filter(([k]) => !drop.includes(k)), [MARKER_KEY, str("m".repeat(markerLength))] as const];
  const plain = `${path}.plain`;
  await writeGguf(plain, { ...spec, metadata });
  const bytes = await readFile(plain);
  await rm(plain);
  const start = bytes.indexOf(ggufString(MARKER_KEY));
  const end = start + fixed + markerLength;
  bytes.writeBigUInt64LE(BigInt(metadata.length - 1 + extra.count), 16);
  const fh = await open(path, "w");
  try {
    await fh.write(bytes.subarray(0, start));
    for (const chunk of extra.chunks()) await fh.write(chunk);
    await fh.write(bytes.subarray(end));
  } finally {
    await fh.close();
  }
}

/** Samples the V8 heap and the event loop every 2 ms while `work` runs: the heap's peak growth, the longest gap. */
async function watch<T>(work: () => Promise<T>): Promise<{ result: T; heapGrowth: number; worstGap: number; mostReads: number }> {
  const baseline = process.memoryUsage().heapUsed;
  let peak = baseline;
  let worstGap = 0;
  let mostReads = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worstGap = Math.max(worstGap, now - last);
    last = now;
    peak = Math.max(peak, process.memoryUsage().heapUsed);
    mostReads = Math.max(mostReads, headerReadsRunning());
  }, 2);
  try {
    const result = await work();
    return { result, heapGrowth: Math.max(peak, process.memoryUsage().heapUsed) - baseline, worstGap: Math.max(worstGap, performance.now() - last), mostReads };
  } finally {
    clearInterval(timer);
  }
}

describe("reading GGUF headers within a fixed memory bound", () => {
  let root: string;
  let hugeArray: string;
  const ITEMS = 16 * 1024 * 1024;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "kekahyde-gguf-limits-"));
    hugeArray = join(root, "huge-array.gguf");
    // 16Mi one-byte strings: 144 MiB of header; kept as JavaScript strings they took ~500 MB of heap.
    await writeLlamaWith(hugeArray, stringArrayEntry("kekahyde.test.padding", ITEMS, (i) => String.fromCharCode(97 + (i % 26))));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("walks a 16-million-item string array without keeping it, in slices that keep the event loop running", async (t) => {
    const { result: info, heapGrowth, worstGap } = await watch(() => readGgufInfo(hugeArray));
    t.diagnostic(`heap growth ${(heapGrowth / MIB).toFixed(1)} MiB, worst event-loop gap ${worstGap.toFixed(1)} ms`);
    assert.equal(info.arrayLengths.get("kekahyde.test.padding"), ITEMS, "counted");
    assert.deepEqual(info.metadata.get("kekahyde.test.padding"), [], "not kept");
    assert.equal(info.arrayItemTypes.get("kekahyde.test.padding"), GgufValueType.STRING);
    assert.equal(info.vocabulary.tokens, SMALL.vocabSize, "the rest of the header is read as before");
    // Kept, the items take ~32 bytes each: 512 MiB.
    assert.ok(heapGrowth < 64 * MIB, `the heap grew by ${(heapGrowth / MIB).toFixed(0)} MiB`);
    assert.ok(worstGap < 250, `the event loop waited ${worstGap.toFixed(0)} ms`);
  });

  it("lists and finds eight such files asked for at once, reading two headers at a time in bounded memory", async (t) => {
    const dir = join(root, "eight");
    await mkdir(dir);
    const names = Array.from({ length: 8 }, (_, i) => `huge-${i}`);
    // Hard links: eight paths (eight reads), one file on disk.
    for (const name of names) await link(hugeArray, join(dir, `${name}.gguf`));
    const warnings: string[] = [];
    const catalogue = createCatalogue({ dirs: [dir], onWarning: (m) => void warnings.push(m) });
    try {
      const { result: entries, heapGrowth, mostReads } = await watch(() => Promise.all(names.map((n) => catalogue.find(n))));
      t.diagnostic(`heap growth ${(heapGrowth / MIB).toFixed(1)} MiB, at most ${mostReads} reads at once`);
      for (const entry of entries) {
        assert.ok(entry?.facts, `${entry?.name}: ${entry?.problem}`);
        assert.equal(entry.facts.architecture, "llama");
      }
      assert.equal(HEADER_READS_AT_ONCE, 2);
      assert.ok(mostReads <= 2, `${mostReads} header reads ran at once`);
      assert.ok(heapGrowth < 128 * MIB, `the heap grew by ${(heapGrowth / MIB).toFixed(0)} MiB`);
      assert.deepEqual(warnings, []);
    } finally {
      catalogue.close();
    }
  });

  it("counts a vocabulary whole but keeps only its first tokens: 512Ki to check, 4096 for a listing", async () => {
    const path = join(root, "big-vocabulary.gguf");
    const tokens = 600_000;
    const token = (i: number) => `tok-${i.toString(36)}`;
    await writeLlamaWith(path, stringArrayEntry("tokenizer.ggml.tokens", tokens, token), ["tokenizer.ggml.tokens"]);
    let textBytes = 0;
    for (let i = 0; i < tokens; i++) textBytes += token(i).length;

    const checked = await readGgufInfo(path);
    assert.deepEqual(checked.vocabulary, { tokens, textBytes });
    assert.equal(checked.arrayLengths.get("tokenizer.ggml.tokens"), tokens);
    const kept = checked.metadata.get("tokenizer.ggml.tokens") as string[];
    assert.equal(kept.length, 1 << 19);
    assert.equal(kept[12345], token(12345));

    const counted = await readGgufInfo(path, { vocabulary: "counted" });
    assert.deepEqual(counted.vocabulary, { tokens, textBytes });
    assert.equal((counted.metadata.get("tokenizer.ggml.tokens") as string[]).length, 4096);
  });

  it("estimates the vocabulary's memory: a larger vocabulary, a larger estimate", async () => {
    // The same tensors, vocabularies of 400 and 400,400 tokens (the file: 5 million tokens, estimated
    // at 389 MiB, 2,349 MiB in the engine).
    const small = join(root, "vocabulary-small.gguf");
    const large = join(root, "vocabulary-large.gguf");
    await writeGguf(small, randomLlamaSpec(SMALL, "Q8_0"));
    const token = (i: number) => (i < 3 ? ["<unk>", "<s>", "</s>"][i] : `piece-${i}`);
    await writeLlamaWith(large, stringArrayEntry("tokenizer.ggml.tokens", 400_400, token), ["tokenizer.ggml.tokens"]);
    const [a, b] = await Promise.all([readGgufInfo(small), readGgufInfo(large)]);
    assert.equal(a.weightsBytes, b.weightsBytes);
    const [ea, eb] = [estimateModelMemory(a, 256), estimateModelMemory(b, 256)];
    assert.ok(eb.vocabulary > ea.vocabulary);
    assert.ok(eb.total - ea.total >= 400_000 * VOCABULARY_BYTES_PER_TOKEN, `the estimate grew by ${eb.total - ea.total} bytes for 400,000 more tokens`);
    assert.ok(VOCABULARY_BYTES_PER_TOKEN >= 300, "what a token costs the engine, as measured");
  });

  it("refuses a header that would take more memory to keep than the bound, and the catalogue lists it with a warning", async () => {
    // 2,100 arrays of 4096 bytes: an 8.6 MB file, but ~134 MiB to keep as JavaScript numbers, over the 128 MiB bound.
    const dir = join(root, "too-large");
    await mkdir(dir);
    const path = join(dir, "fat.gguf");
    const entry = (i: number) => Buffer.concat([ggufString(`kekahyde.test.bytes.${i}`), u32(GgufValueType.ARRAY), u32(GgufValueType.UINT8), u64(4096), Buffer.alloc(4096, 7)]);
    const entries = Array.from({ length: 2100 }, (_, i) => entry(i));
    await writeLlamaWith(path, { count: entries.length, byteLength: entries.reduce((n, e) => n + e.length, 0), chunks: () => entries });
    await assert.rejects(readGgufInfo(path), (e: Error) => e instanceof GgufTooLargeError && /more than 128 MiB of memory/.test(e.message));
    assert.ok((await readGgufInfo(path, { maxKeptBytes: 256 * MIB })).metadata.has("kekahyde.test.bytes.2099"), "a larger bound reads it");

    const warnings: Array<[string, Record<string, unknown>]> = [];
    const catalogue = createCatalogue({ dirs: [dir], onWarning: (m, d) => void warnings.push([m, d]) });
    try {
      const [listed] = await catalogue.list();
      assert.equal(listed.facts, null);
      assert.match(listed.problem ?? "", /more than 128 MiB of memory/);
      await catalogue.list();
      assert.equal(warnings.length, 1, "one log line per version of the file");
      assert.match(warnings[0][0], /too large to read/);
      assert.equal(warnings[0][1].file, listed.path);
    } finally {
      catalogue.close();
    }
  });
});
