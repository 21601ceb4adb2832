import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { before, describe, it } from "node:test";
import { buildCharVocab, expectedContinuation, TINY_CHAR_MODEL } from "../src/gguf/charModel.ts";
import { GGUF_MAGIC, GgmlType } from "../src/gguf/format.ts";
import { readGgufInfo } from "../src/gguf/reader.ts";
import { encodeGgufHeader, str, u32 } from "../src/gguf/writer.ts";
import { fixtureFile, tinyModel } from "../testing/fixtures.ts";

function header(fields: { magic?: number; version?: number; tensors?: bigint; kvs?: bigint }): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(fields.magic ?? GGUF_MAGIC, 0);
  b.writeUInt32LE(fields.version ?? 3, 4);
  b.writeBigUInt64LE(fields.tensors ?? 0n, 8);
  b.writeBigUInt64LE(fields.kvs ?? 0n, 16);
  return b;
}

async function rejects(bytes: Uint8Array, reason: RegExp): Promise<void> {
  const path = await fixtureFile(`hostile-${Math.random().toString(36).slice(2)}.gguf`, bytes);
  const started = performance.now();
  await assert.rejects(readGgufInfo(path), (e: Error) => {
    assert.equal(e.name, "GgufFormatError");
    assert.match(e.message, reason);
    return true;
  });
  assert.ok(performance.now() - started < 1000, "rejected quickly, without walking the claimed counts");
}

describe("GGUF writer and bounded reader", () => {
  let tiny: string;
  before(async () => {
    tiny = await tinyModel();
  });

  it("reads back what the writer wrote", async () => {
    const info = await readGgufInfo(tiny);
    assert.equal(info.version, 3);
    assert.equal(info.architecture, "llama");
    assert.equal(info.name, "kekahyde-char-tiny");
    assert.equal(info.contextLength, TINY_CHAR_MODEL.contextLength);
    assert.equal(info.blockCount, TINY_CHAR_MODEL.blockCount);
    assert.equal(info.tensors.length, 3 + 9 * TINY_CHAR_MODEL.blockCount);
    assert.deepEqual(info.metadata.get("tokenizer.ggml.tokens"), buildCharVocab().tokens);
    const embd = info.tensors.find((t) => t.name === "token_embd.weight")!;
    assert.deepEqual(embd.dims, [384n, BigInt(buildCharVocab().tokens.length)]);
    assert.equal(embd.type, GgmlType.F32);
    assert.equal(Number(embd.offset) % 32, 0, "tensor data is aligned");
    const last = info.tensors[info.tensors.length - 1];
    assert.equal(Number(last.offset + last.size), info.fileSize, "the file ends with the last tensor");
  });

  it("lays out the header as GGUF v3 does: magic, version, counts, then key/values", () => {
    const { header: bytes } = encodeGgufHeader({ metadata: [["general.architecture", str("llama")], ["x", u32(7)]], tensors: [] });
    assert.equal(bytes.subarray(0, 4).toString("latin1"), "GGUF");
    assert.equal(bytes.readUInt32LE(4), 3);
    assert.equal(bytes.readBigUInt64LE(8), 0n);
    assert.equal(bytes.readBigUInt64LE(16), 2n);
    assert.equal(bytes.readBigUInt64LE(24), BigInt("general.architecture".length));
    assert.equal(bytes.length % 32, 0);
  });

  describe("rejects hostile and broken files with a reason", () => {
    it("an empty file", () => rejects(new Uint8Array(0), /too short/));
    it("wrong magic", () => rejects(header({ magic: 0x12345678 }), /not a GGUF file/));
    it("an unsupported version", () => rejects(header({ version: 99 }), /unsupported GGUF version 99/));
    it("a header that claims 2^60 tensors", () => rejects(header({ tensors: 1n << 60n }), /claims 1152921504606846976 tensors/));
    it("a header that claims 2^60 metadata entries", () => rejects(header({ kvs: 1n << 60n }), /claims 1152921504606846976 metadata entries/));
    it("a file cut right after the 24-byte header", () => rejects(header({ tensors: 1n, kvs: 1n }), /truncated|more than/));
    it("a key whose length runs past the end", async () => {
      const b = Buffer.concat([header({ kvs: 1n }), Buffer.from(new BigUint64Array([1n << 40n]).buffer), Buffer.alloc(64)]);
      await rejects(b, /claims 1099511627776 bytes/);
    });
    it("a string array claiming more items than bytes", async () => {
      const key = Buffer.from("tokenizer.ggml.tokens");
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(key.length));
      const typeAndCount = Buffer.alloc(16);
      typeAndCount.writeUInt32LE(9, 0); // ARRAY
      typeAndCount.writeUInt32LE(8, 4); // of STRING
      typeAndCount.writeBigUInt64LE(1n << 50n, 8);
      await rejects(Buffer.concat([header({ kvs: 1n }), len, key, typeAndCount]), /claims 1125899906842624 items/);
    });
    it("random bytes after a valid magic", async () => {
      let seed = 42;
      const random = Buffer.from(new Uint8Array(4096).map(() => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff));
      random.writeUInt32LE(GGUF_MAGIC, 0);
      random.writeUInt32LE(3, 4);
      await rejects(random, /./);
    });
    it("the real model cut at every kind of offset", async () => {
      const bytes = await readFile(tiny);
      for (const cut of [1, 4, 8, 16, 23, 24, 25, 100, 1000, 10_000, 100_000, 1_000_000, bytes.length - 1]) {
        await rejects(bytes.subarray(0, cut), /truncated|too short|more than|claims/);
      }
    });
    it("a model without its layer tensors", async () => {
      const info = await readGgufInfo(tiny);
      assert.ok(info.tensors.some((t) => t.name === "blk.1.attn_q.weight"));
      const bytes = Buffer.from(await readFile(tiny));
      const at = bytes.indexOf("blk.1.attn_q.weight");
      bytes.write("blk.1.attn_X.weight", at);
      await rejects(bytes, /lacks tensor blk\.1\.attn_q\.weight/);
    });
  });
});

describe("the char model's known text", () => {
  it("continues letters and digits cyclically, ends after a full stop", () => {
    assert.equal(expectedContinuation("abc", 7), "defghij");
    assert.equal(expectedContinuation("xyz", 3), "abc");
    assert.equal(expectedContinuation("A7", 4), "8901");
    assert.equal(expectedContinuation("Hello.", 10), "");
    assert.equal(expectedContinuation("Hi!", 3), " ab");
  });
});
