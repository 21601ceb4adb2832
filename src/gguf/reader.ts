import { open, type FileHandle } from "node:fs/promises";
import { GGML_BLOCK, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_SCALAR_SIZE, GgmlType, GgufValueType, tensorByteSize } from "./format.ts";
import { GgufFormatError, GgufTooLargeError, type GgufInfo, type GgufMetadataValue, type GgufScalar, type GgufTensorInfo } from "./info.ts";
import { checkModel, LLAMA_MAX_LAYERS } from "./modelChecks.ts";

/**
 * A bounded GGUF header reader. Every count and length in the header is checked against the bytes that are
 * actually left in the file before anything is allocated or looped over, so a hostile or truncated file is
 * rejected with a reason in milliseconds. node-llama-cpp's own reader is not used for this: it hangs on a
 * header that claims 2^60 tensors and accepts a file cut at 24 bytes.
 *
 * Memory is bounded as well, whatever the file holds: arrays longer than 4096 items are skipped over a 1 MiB
 * chunk at a time instead of kept (the vocabulary keeps its first tokens only), what is kept is counted
 * against a fixed limit, and at most HEADER_READS_AT_ONCE reads run at once. Eight files with 16 million
 * one-byte strings each, read at once, once took the daemon to a 4.4 GB out-of-memory crash.
 *
 * A header that parses is then checked for facts llama.cpp accepts and later crashes on (tensor types by
 * role, zero widths, expert counts, epsilons, alignment, vocabulary): see modelChecks.ts.
 */

export { GgufFormatError, GgufTooLargeError, type GgufInfo, type GgufMetadataValue } from "./info.ts";

export interface ReadGgufOptions {
  /** Refuse headers larger than this (default 256 MiB; real vocabularies take a few MiB). */
  maxHeaderBytes?: number;
  /**
   * Refuse a header when what the reader keeps of it (metadata, tensor table, not counting the vocabulary)
   * would take more than about this much memory (default 128 MiB; a real model's takes a few, and any one
   * metadata string may be up to 64 MiB).
   */
  maxKeptBytes?: number;
  /**
   * How much of the vocabulary (tokenizer.ggml.tokens) to keep as text. "checked" (the default): up to its
   * first 512Ki tokens (32 MiB), every real vocabulary whole, so that the checks look for duplicate pieces in
   * all of it and a draft model's tokens can be compared with its target's. "counted": its first 4096, for a
   * caller that only needs its size (a listing); the checks then look at those. Either way the vocabulary is
   * counted whole (`vocabulary`, `arrayLengths`).
   */
  vocabulary?: "checked" | "counted";
  /** Check that the tensors an architecture needs are present (default true). */
  requireTensors?: boolean;
  /**
   * Check the facts llama.cpp would crash on (modelChecks.ts; default true). Off only to study what the
   * engine does with a raw file.
   */
  checkModel?: boolean;
}

const MAX_DIMS = 4;
const MIB = 1024 * 1024;
const MAX_STRING = 64 * MIB;
const CHUNK = MIB;
const VOCABULARY_KEY = "tokenizer.ggml.tokens";
/** Arrays longer than this keep no items, except the vocabulary: nothing here needs them (scores, merges, ...). */
const SMALL_ARRAY = 4096;
/**
 * The most of the vocabulary "checked" keeps: twice the largest real vocabulary (Gemma's 262,144 tokens), and
 * at most 32 MiB of estimated memory. A longer one keeps its first tokens; the checks look at those.
 */
const VOCABULARY_KEEP = { tokens: 1 << 19, bytes: 32 * MIB };
const VOCABULARY_SAMPLE = { tokens: 4096, bytes: 32 * MIB };

/**
 * About what V8 takes to keep things, for the memory bound: a string is a 16-24-byte header plus its text
 * (one byte a character, two in a string with a character above U+00FF), plus the 8-byte slot that holds it;
 * a metadata entry or a number in an array somewhat more than its value; a tensor's description two objects
 * (as read, then placed) with a BigInt array of dimensions.
 */
const keptStringBytes = (textBytes: number) => 40 + textBytes;
const ENTRY_BYTES = 96;
const NUMBER_BYTES = 16;
const TENSOR_BYTES = 512;

/** What a read keeps in memory, estimated, against a fixed limit: a header over it is refused, not read on. */
class KeptBytes {
  private used = 0;
  constructor(private readonly limit: number) {}

  add(bytes: number, what: string): void {
    this.used += bytes;
    if (this.used > this.limit) {
      throw new GgufTooLargeError(
        `reading the header would take more than ${Math.round(this.limit / MIB)} MiB of memory (at ${what}), far more than a real model's header; it is not read`,
      );
    }
  }
}

/** A string's exact bytes as latin1 when they are not valid UTF-8 and decoding them as `text` lost them, else null. */
function lostBytes(bytes: Buffer, text: string): string | null {
  return text.includes("\uFFFD") && !Buffer.from(text, "utf8").equals(bytes) ? bytes.toString("latin1") : null;
}

function fixedSize(type: GgufValueType, what: string): number {
  const size = GGUF_SCALAR_SIZE[type];
  if (size === undefined) throw new GgufFormatError(`${what} has unknown value type ${type}`);
  return size;
}

/** The fixed-size value of `type` at `at` in `b`. */
function fixedSizeValue(type: GgufValueType, b: Buffer, at: number): GgufScalar {
  switch (type) {
    case GgufValueType.UINT8: return b.readUInt8(at);
    case GgufValueType.INT8: return b.readInt8(at);
    case GgufValueType.UINT16: return b.readUInt16LE(at);
    case GgufValueType.INT16: return b.readInt16LE(at);
    case GgufValueType.UINT32: return b.readUInt32LE(at);
    case GgufValueType.INT32: return b.readInt32LE(at);
    case GgufValueType.FLOAT32: return b.readFloatLE(at);
    case GgufValueType.BOOL: return b.readUInt8(at) !== 0;
    case GgufValueType.UINT64: return b.readBigUInt64LE(at);
    case GgufValueType.INT64: return b.readBigInt64LE(at);
    case GgufValueType.FLOAT64: return b.readDoubleLE(at);
    default: throw new GgufFormatError(`unknown value type ${type}`);
  }
}

/** Reads forward through the file in bounded chunks; never trusts a length it has not checked against the file. */
class BoundedCursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0; // file offset of buf[0]
  pos = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly fileSize: number,
    private readonly maxHeaderBytes: number,
  ) {}

  get remaining(): number {
    return this.fileSize - this.pos;
  }

  private get buffered(): number {
    return this.bufStart + this.buf.length - this.pos;
  }

  private async ensure(n: number, what: string): Promise<void> {
    if (n > this.remaining) {
      throw new GgufFormatError(`file is truncated: ${what} needs ${n} bytes at offset ${this.pos} but only ${this.remaining} remain`);
    }
    if (this.pos + n > this.maxHeaderBytes) {
      throw new GgufTooLargeError(`header is larger than the ${this.maxHeaderBytes}-byte limit (at ${what})`);
    }
    if (this.buffered >= n) return;
    const want = Math.min(Math.max(n, CHUNK), this.fileSize - this.pos);
    const next = Buffer.alloc(want);
    const { bytesRead } = await this.fh.read(next, 0, want, this.pos);
    if (bytesRead < n) throw new GgufFormatError(`file is truncated: could not read ${what} at offset ${this.pos}`);
    this.buf = next.subarray(0, bytesRead);
    this.bufStart = this.pos;
  }

  /** The next n bytes, which must be buffered. */
  private take(n: number): Buffer {
    const start = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(start, start + n);
  }

  private async view(n: number, what: string): Promise<Buffer> {
    await this.ensure(n, what);
    return this.take(n);
  }

  /** The next string's length when it is buffered whole and within every limit, else -1. */
  private bufferedStringLength(): number {
    const have = this.buffered;
    if (have < 8) return -1;
    const at = this.pos - this.bufStart;
    const length = this.buf.readUInt32LE(at);
    const fits = this.buf.readUInt32LE(at + 4) === 0 && 8 + length <= have && length <= MAX_STRING && this.pos + 8 + length <= this.maxHeaderBytes;
    return fits ? length : -1;
  }

  /**
   * The next string's bytes when they are buffered already and within every limit, else null (then
   * stringBytes reads them, or says what is wrong with them). Array items are read through this and
   * skipBufferedString without awaiting anything, a chunk at a time; reading the next chunk is what yields to
   * the event loop.
   */
  bufferedStringBytes(): Buffer | null {
    const length = this.bufferedStringLength();
    if (length === -1) return null;
    this.pos += 8;
    return this.take(length);
  }

  /** Skips the next string when it is buffered and within every limit: its length, else -1 (nothing skipped). */
  skipBufferedString(): number {
    const length = this.bufferedStringLength();
    if (length !== -1) this.pos += 8 + length;
    return length;
  }

  async stringBytes(what: string): Promise<Buffer> {
    const buffered = this.bufferedStringBytes();
    if (buffered) return buffered;
    const len = await this.u64(`${what} length`);
    if (len > BigInt(Math.min(this.remaining, MAX_STRING))) {
      throw new GgufFormatError(`${what} claims ${len} bytes but only ${this.remaining} remain in the file`);
    }
    return this.view(Number(len), what);
  }

  async u8(what: string): Promise<number> {
    return (await this.view(1, what)).readUInt8(0);
  }
  async u32(what: string): Promise<number> {
    return (await this.view(4, what)).readUInt32LE(0);
  }
  async u64(what: string): Promise<bigint> {
    return (await this.view(8, what)).readBigUInt64LE(0);
  }
  async string(what: string): Promise<string> {
    return (await this.stringBytes(what)).toString("utf8");
  }

  async scalar(type: GgufValueType, what: string): Promise<GgufScalar> {
    if (type === GgufValueType.STRING) return this.string(what);
    return fixedSizeValue(type, await this.bytes(fixedSize(type, what), what), 0);
  }

  /** The next n bytes (a view into the read buffer, valid until the next read). */
  bytes(n: number, what: string): Promise<Buffer> {
    return this.view(n, what);
  }

  skip(n: number, what: string): void {
    if (n > this.remaining) throw new GgufFormatError(`file is truncated: ${what} needs ${n} bytes but only ${this.remaining} remain`);
    this.pos += n;
  }
}

interface ValueSink {
  arrayItemTypes: Map<string, GgufValueType>;
  arrayLengths: Map<string, number>;
  invalidUtf8: Map<string, Map<number, string>>;
  vocabulary: GgufInfo["vocabulary"];
  kept: KeptBytes;
  vocabularyKeep: { tokens: number; bytes: number };
}

/**
 * Skips items `from` to `count` of a string array: their bytes of text. The items of one buffered chunk are
 * skipped without awaiting anything; reading the next chunk yields to the event loop, so a 16-million-item
 * array neither fills memory nor holds up other work.
 */
async function skipStrings(cur: BoundedCursor, from: number, count: number, key: string): Promise<number> {
  let textBytes = 0;
  for (let i = from; i < count; i++) {
    const length = cur.skipBufferedString();
    textBytes += length !== -1 ? length : (await cur.stringBytes(`item ${i} of ${key}`)).length;
  }
  return textBytes;
}

/**
 * A string array's items as far as they are kept: the vocabulary's first ones (up to `sink.vocabularyKeep`),
 * every item of a short array, none of a long one (nothing here needs tokenizer.ggml.merges and the like).
 * The rest are skipped, and counted.
 */
async function readStringArray(cur: BoundedCursor, key: string, count: number, sink: ValueSink): Promise<string[]> {
  const isVocabulary = key === VOCABULARY_KEY;
  const keep = isVocabulary ? sink.vocabularyKeep : { tokens: count <= SMALL_ARRAY ? count : 0, bytes: Infinity };
  const items: string[] = [];
  let keptBytes = 0;
  let textBytes = 0;
  // Pieces that are not valid UTF-8 decode lossily; their exact bytes are kept so that two different pieces
  // are never taken for the same one.
  let invalid: Map<number, string> | undefined;
  let i = 0;
  while (i < count && i < keep.tokens) {
    const bytes = cur.bufferedStringBytes() ?? (await cur.stringBytes(`item ${i} of ${key}`));
    i++;
    textBytes += bytes.length;
    const cost = keptStringBytes(bytes.length);
    if (keptBytes + cost > keep.bytes) break; // the kept items are the first ones
    keptBytes += cost;
    if (!isVocabulary) sink.kept.add(cost, `item ${i - 1} of ${key}`);
    const text = bytes.toString("utf8");
    const exact = lostBytes(bytes, text);
    if (exact !== null) (invalid ??= new Map()).set(i - 1, exact);
    items.push(text);
  }
  textBytes += await skipStrings(cur, i, count, key);
  if (invalid) sink.invalidUtf8.set(key, invalid);
  if (isVocabulary) sink.vocabulary = { tokens: count, textBytes };
  return items;
}

async function readValue(cur: BoundedCursor, type: GgufValueType, key: string, sink: ValueSink): Promise<GgufMetadataValue> {
  if (type !== GgufValueType.ARRAY) {
    const value = await cur.scalar(type, `value of ${key}`);
    sink.kept.add(typeof value === "string" ? keptStringBytes(value.length) : NUMBER_BYTES, `value of ${key}`);
    return value;
  }
  const itemType = (await cur.u32(`item type of ${key}`)) as GgufValueType;
  sink.arrayItemTypes.set(key, itemType);
  const count = await cur.u64(`length of ${key}`);
  if (itemType === GgufValueType.ARRAY) throw new GgufFormatError(`${key} is an array of arrays, which GGUF does not allow`);
  const minItem = itemType === GgufValueType.STRING ? 8 : GGUF_SCALAR_SIZE[itemType];
  if (minItem === undefined) throw new GgufFormatError(`${key} has unknown array item type ${itemType}`);
  if (count * BigInt(minItem) > BigInt(cur.remaining)) {
    throw new GgufFormatError(`${key} claims ${count} items, more than the ${cur.remaining} bytes left in the file can hold`);
  }
  const n = Number(count);
  sink.arrayLengths.set(key, n);
  if (itemType === GgufValueType.STRING) return readStringArray(cur, key, n, sink);
  // Large numeric arrays (token scores, types) are skipped rather than kept: nothing here needs them.
  if (n > SMALL_ARRAY) {
    cur.skip(n * minItem, `items of ${key}`);
    return [];
  }
  sink.kept.add(n * NUMBER_BYTES, `items of ${key}`);
  // At most 4096 items of at most 8 bytes: read at once.
  const bytes = await cur.bytes(n * minItem, `items of ${key}`);
  return Array.from({ length: n }, (_, i) => fixedSizeValue(itemType, bytes, i * minItem));
}

function asNumber(v: GgufMetadataValue | undefined): number | null {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return null;
}

/** Tensors every llama-family block has; checked for the architectures whose layout we know. */
const BLOCK_TENSORS_BY_ARCH: Record<string, string[]> = {
  llama: ["attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_norm.weight"],
};

function checkRequiredTensors(info: GgufInfo): void {
  const names = new Set(info.tensors.map((t) => t.name));
  if (!names.has("token_embd.weight")) throw new GgufFormatError("model has no token_embd.weight tensor (token embeddings)");
  const perBlock = BLOCK_TENSORS_BY_ARCH[info.architecture];
  if (info.blockCount === null) throw new GgufFormatError(`metadata lacks ${info.architecture}.block_count`);
  if (info.blockCount < 1 || info.blockCount > LLAMA_MAX_LAYERS) throw new GgufFormatError(`${info.architecture}.block_count is ${info.blockCount}, not a sane layer count`);
  for (let b = 0; b < info.blockCount; b++) {
    const required = perBlock ?? [];
    for (const t of required) {
      if (!names.has(`blk.${b}.${t}`)) throw new GgufFormatError(`model lacks tensor blk.${b}.${t} (layer ${b} of ${info.blockCount})`);
    }
    if (!perBlock && ![...names].some((n) => n.startsWith(`blk.${b}.`))) {
      throw new GgufFormatError(`model has no tensors for layer ${b} of ${info.blockCount}`);
    }
  }
}

/**
 * Header reads that run at once; further ones wait their turn. Each takes at most about maxKeptBytes plus the
 * kept vocabulary (and a read buffer), so this bounds what reading headers takes, however many requests ask
 * for models at once.
 */
export const HEADER_READS_AT_ONCE = 2;
let readsRunning = 0;
const waitingReads: Array<() => void> = [];

/** Header reads running now (at most HEADER_READS_AT_ONCE). */
export const headerReadsRunning = (): number => readsRunning;

async function oneOfFewReads<T>(read: () => Promise<T>): Promise<T> {
  // A finished read hands its slot straight to the first waiting one, so the count never goes over.
  if (readsRunning < HEADER_READS_AT_ONCE) readsRunning++;
  else await new Promise<void>((resolve) => waitingReads.push(resolve));
  try {
    return await read();
  } finally {
    const next = waitingReads.shift();
    if (next) next();
    else readsRunning--;
  }
}

/**
 * Reads and validates a GGUF file's header and tensor table. Throws GgufFormatError with a reason
 * (GgufTooLargeError for a header that would take more memory than the reader allows). Bounded in memory:
 * long arrays are walked, not kept; at most HEADER_READS_AT_ONCE reads run at once.
 */
export function readGgufInfo(path: string, options: ReadGgufOptions = {}): Promise<GgufInfo> {
  return oneOfFewReads(() => readHeader(path, options));
}

async function readHeader(path: string, options: ReadGgufOptions): Promise<GgufInfo> {
  const fh = await open(path, "r");
  try {
    const { size: fileSize } = await fh.stat();
    const cur = new BoundedCursor(fh, fileSize, options.maxHeaderBytes ?? 256 * MIB);
    const kept = new KeptBytes(options.maxKeptBytes ?? 128 * MIB);
    if (fileSize < 4) throw new GgufFormatError(`file is ${fileSize} bytes long, too short to be GGUF`);
    const magic = await cur.u32("magic");
    if (magic !== GGUF_MAGIC) {
      const got = Buffer.alloc(4);
      got.writeUInt32LE(magic);
      throw new GgufFormatError(`not a GGUF file: it starts with ${JSON.stringify(got.toString("latin1"))} instead of "GGUF"`);
    }
    const version = await cur.u32("version");
    if (version !== 2 && version !== 3) throw new GgufFormatError(`unsupported GGUF version ${version} (supported: 2, 3)`);
    const tensorCount = await cur.u64("tensor count");
    const kvCount = await cur.u64("metadata count");
    // Smallest possible entries: a tensor info is >= 8+1+4+8+4+8 bytes, a key/value >= 8+1+4+1.
    if (tensorCount * 33n > BigInt(cur.remaining)) {
      throw new GgufFormatError(`header claims ${tensorCount} tensors, more than a ${fileSize}-byte file can describe`);
    }
    if (kvCount * 14n > BigInt(cur.remaining)) {
      throw new GgufFormatError(`header claims ${kvCount} metadata entries, more than a ${fileSize}-byte file can hold`);
    }

    const metadata = new Map<string, GgufMetadataValue>();
    const sink: ValueSink = {
      arrayItemTypes: new Map(),
      arrayLengths: new Map(),
      invalidUtf8: new Map(),
      vocabulary: { tokens: 0, textBytes: 0 },
      kept,
      vocabularyKeep: options.vocabulary === "counted" ? VOCABULARY_SAMPLE : VOCABULARY_KEEP,
    };
    for (let i = 0n; i < kvCount; i++) {
      const key = await cur.string(`metadata key ${i}`);
      kept.add(ENTRY_BYTES + keptStringBytes(key.length), `metadata key ${key}`);
      const type = (await cur.u32(`type of ${key}`)) as GgufValueType;
      if (metadata.has(key)) throw new GgufFormatError(`metadata key ${key} appears twice`);
      metadata.set(key, await readValue(cur, type, key, sink));
    }

    const alignmentValue = asNumber(metadata.get("general.alignment")) ?? GGUF_DEFAULT_ALIGNMENT;
    if (alignmentValue < 1 || alignmentValue > 1 << 20 || (alignmentValue & (alignmentValue - 1)) !== 0) {
      throw new GgufFormatError(`general.alignment ${alignmentValue} is not a power of two`);
    }
    const alignment = BigInt(alignmentValue);

    const raw: Array<Omit<GgufTensorInfo, "offset"> & { relOffset: bigint }> = [];
    const seen = new Set<string>();
    for (let i = 0n; i < tensorCount; i++) {
      const name = await cur.string(`tensor ${i} name`);
      if (seen.has(name)) throw new GgufFormatError(`tensor ${name} appears twice`);
      seen.add(name);
      kept.add(TENSOR_BYTES + keptStringBytes(name.length), `tensor ${name}`);
      const nDims = await cur.u32(`tensor ${name} dimension count`);
      if (nDims < 1 || nDims > MAX_DIMS) throw new GgufFormatError(`tensor ${name} has ${nDims} dimensions (1..${MAX_DIMS} allowed)`);
      const dims: bigint[] = [];
      let elements = 1n;
      for (let d = 0; d < nDims; d++) {
        const dim = await cur.u64(`tensor ${name} dimension ${d}`);
        if (dim === 0n || dim > BigInt(fileSize) * 8n) throw new GgufFormatError(`tensor ${name} dimension ${d} is ${dim}, not sane for this file`);
        dims.push(dim);
        elements *= dim;
      }
      const type = (await cur.u32(`tensor ${name} type`)) as GgmlType;
      if (!(type in GGML_BLOCK)) throw new GgufFormatError(`tensor ${name} has unknown ggml type ${type}`);
      const size = tensorByteSize(type, elements);
      if (size === null) throw new GgufFormatError(`tensor ${name}: ${elements} elements do not fill whole ${GgmlType[type]} blocks`);
      const relOffset = await cur.u64(`tensor ${name} offset`);
      if (relOffset % alignment !== 0n) throw new GgufFormatError(`tensor ${name} offset ${relOffset} is not aligned to ${alignment}`);
      raw.push({ name, dims, type, size, relOffset });
    }

    const dataOffset = ((BigInt(cur.pos) + alignment - 1n) / alignment) * alignment;
    const tensors: GgufTensorInfo[] = raw.map(({ relOffset, ...t }) => ({ ...t, offset: dataOffset + relOffset }));
    let weights = 0n;
    for (const t of tensors) {
      if (t.offset + t.size > BigInt(fileSize)) {
        throw new GgufFormatError(
          `file is truncated: tensor ${t.name} needs bytes ${t.offset}..${t.offset + t.size} but the file is ${fileSize} bytes long`,
        );
      }
      weights += t.size;
    }

    const architecture = metadata.get("general.architecture");
    if (typeof architecture !== "string" || architecture.length === 0) {
      throw new GgufFormatError("metadata lacks general.architecture, so no engine can know how to run this model");
    }
    const nameValue = metadata.get("general.name");
    const info: GgufInfo = {
      version,
      fileSize,
      metadata,
      arrayItemTypes: sink.arrayItemTypes,
      arrayLengths: sink.arrayLengths,
      vocabulary: sink.vocabulary,
      invalidUtf8: sink.invalidUtf8,
      tensors,
      alignment: alignmentValue,
      dataOffset,
      architecture,
      name: typeof nameValue === "string" ? nameValue : null,
      contextLength: asNumber(metadata.get(`${architecture}.context_length`)),
      blockCount: asNumber(metadata.get(`${architecture}.block_count`)),
      weightsBytes: Number(weights),
    };
    if (tensors.length === 0) throw new GgufFormatError("model contains no tensors");
    if (options.checkModel !== false) checkModel(info);
    if (options.requireTensors !== false) checkRequiredTensors(info);
    return info;
  } finally {
    await fh.close();
  }
}
