import { open, type FileHandle } from "node:fs/promises";
import { GGML_BLOCK, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_SCALAR_SIZE, GgmlType, GgufValueType, tensorByteSize } from "./format.ts";
import { checkModel, LLAMA_MAX_LAYERS } from "./modelChecks.ts";

/**
 * A bounded GGUF header reader. Every count and length in the header is checked against the bytes that are
 * actually left in the file before anything is allocated or looped over, so a hostile or truncated file is
 * rejected with a reason in milliseconds. node-llama-cpp's own reader is not used for this: it hangs on a
 * header that claims 2^60 tensors and accepts a file cut at 24 bytes.
 *
 * A header that parses is then checked for facts llama.cpp accepts and later crashes on (tensor types by
 * role, zero widths, expert counts, epsilons, alignment, vocabulary): see modelChecks.ts.
 */

export class GgufFormatError extends Error {
  override name = "GgufFormatError";
}

export type GgufScalar = number | bigint | boolean | string;
/** Metadata as read: scalars as values, arrays of scalars as arrays (strings arrays kept; they hold the vocabulary). */
export type GgufMetadataValue = GgufScalar | GgufScalar[];

export interface GgufTensorInfo {
  name: string;
  dims: bigint[];
  type: GgmlType;
  /** Absolute byte offset of the tensor data in the file. */
  offset: bigint;
  size: bigint;
}

export interface GgufInfo {
  version: number;
  fileSize: number;
  metadata: Map<string, GgufMetadataValue>;
  /** The item type of every array in the metadata (large numeric arrays are not kept, but their type is). */
  arrayItemTypes: Map<string, GgufValueType>;
  /**
   * Items of string arrays whose bytes are not valid UTF-8, by key and index: their exact bytes as latin1 (the
   * metadata holds them decoded, with U+FFFD).
   */
  invalidUtf8: Map<string, Map<number, string>>;
  tensors: GgufTensorInfo[];
  /** general.alignment, or GGUF's default of 32. */
  alignment: number;
  dataOffset: bigint;
  architecture: string;
  name: string | null;
  contextLength: number | null;
  blockCount: number | null;
  /** Sum of all tensor data sizes: what the weights need in memory. */
  weightsBytes: number;
}

export interface ReadGgufOptions {
  /** Refuse headers larger than this (default 256 MiB; real vocabularies take a few MiB). */
  maxHeaderBytes?: number;
  /** Check that the tensors an architecture needs are present (default true). */
  requireTensors?: boolean;
  /**
   * Check the facts llama.cpp would crash on (modelChecks.ts; default true). Off only to study what the
   * engine does with a raw file.
   */
  checkModel?: boolean;
}

const MAX_DIMS = 4;
const MAX_STRING = 64 * 1024 * 1024;
const CHUNK = 1 << 20;

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

  private async ensure(n: number, what: string): Promise<void> {
    if (n > this.remaining) {
      throw new GgufFormatError(`file is truncated: ${what} needs ${n} bytes at offset ${this.pos} but only ${this.remaining} remain`);
    }
    if (this.pos + n > this.maxHeaderBytes) {
      throw new GgufFormatError(`header is larger than the ${this.maxHeaderBytes}-byte limit (at ${what})`);
    }
    const have = this.bufStart + this.buf.length - this.pos;
    if (have >= n) return;
    const want = Math.min(Math.max(n, CHUNK), this.fileSize - this.pos);
    const next = Buffer.alloc(want);
    const { bytesRead } = await this.fh.read(next, 0, want, this.pos);
    if (bytesRead < n) throw new GgufFormatError(`file is truncated: could not read ${what} at offset ${this.pos}`);
    this.buf = next.subarray(0, bytesRead);
    this.bufStart = this.pos;
  }

  private async view(n: number, what: string): Promise<Buffer> {
    await this.ensure(n, what);
    const start = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(start, start + n);
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
  /** A string; `onInvalid` gets the exact bytes (as latin1) when they are not valid UTF-8 and decoding lost them. */
  async string(what: string, onInvalid?: (latin1: string) => void): Promise<string> {
    const len = await this.u64(`${what} length`);
    if (len > BigInt(Math.min(this.remaining, MAX_STRING))) {
      throw new GgufFormatError(`${what} claims ${len} bytes but only ${this.remaining} remain in the file`);
    }
    const bytes = await this.view(Number(len), what);
    const text = bytes.toString("utf8");
    if (onInvalid && text.includes("\uFFFD") && !Buffer.from(text, "utf8").equals(bytes)) onInvalid(bytes.toString("latin1"));
    return text;
  }

  async scalar(type: GgufValueType, what: string): Promise<GgufScalar> {
    const size = GGUF_SCALAR_SIZE[type];
    if (type === GgufValueType.STRING) return this.string(what);
    if (size === undefined) throw new GgufFormatError(`${what} has unknown value type ${type}`);
    const b = await this.view(size, what);
    switch (type) {
      case GgufValueType.UINT8: return b.readUInt8(0);
      case GgufValueType.INT8: return b.readInt8(0);
      case GgufValueType.UINT16: return b.readUInt16LE(0);
      case GgufValueType.INT16: return b.readInt16LE(0);
      case GgufValueType.UINT32: return b.readUInt32LE(0);
      case GgufValueType.INT32: return b.readInt32LE(0);
      case GgufValueType.FLOAT32: return b.readFloatLE(0);
      case GgufValueType.BOOL: return b.readUInt8(0) !== 0;
      case GgufValueType.UINT64: return b.readBigUInt64LE(0);
      case GgufValueType.INT64: return b.readBigInt64LE(0);
      case GgufValueType.FLOAT64: return b.readDoubleLE(0);
      default: throw new GgufFormatError(`${what} has unknown value type ${type}`);
    }
  }

  async skip(n: number, what: string): Promise<void> {
    if (n > this.remaining) throw new GgufFormatError(`file is truncated: ${what} needs ${n} bytes but only ${this.remaining} remain`);
    this.pos += n;
  }
}

interface ValueSink {
  arrayItemTypes: Map<string, GgufValueType>;
  invalidUtf8: Map<string, Map<number, string>>;
}

async function readValue(cur: BoundedCursor, type: GgufValueType, key: string, sink: ValueSink): Promise<GgufMetadataValue> {
  if (type !== GgufValueType.ARRAY) return cur.scalar(type, `value of ${key}`);
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
  // Large numeric arrays (token scores, types) are skipped rather than kept: nothing here needs them.
  if (itemType !== GgufValueType.STRING && n > 4096) {
    await cur.skip(n * minItem, `items of ${key}`);
    return [];
  }
  const items: GgufScalar[] = new Array(n);
  if (itemType === GgufValueType.STRING) {
    // Pieces that are not valid UTF-8 decode lossily; their exact bytes are kept so that two different pieces
    // are never taken for the same one.
    let invalid: Map<number, string> | undefined;
    for (let i = 0; i < n; i++) {
      items[i] = await cur.string(`item ${i} of ${key}`, (latin1) => {
        invalid ??= new Map();
        invalid.set(i, latin1);
      });
    }
    if (invalid) sink.invalidUtf8.set(key, invalid);
    return items;
  }
  for (let i = 0; i < n; i++) items[i] = await cur.scalar(itemType, `item ${i} of ${key}`);
  return items;
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

/** Reads and validates a GGUF file's header and tensor table. Throws GgufFormatError with a reason. */
export async function readGgufInfo(path: string, options: ReadGgufOptions = {}): Promise<GgufInfo> {
  const fh = await open(path, "r");
  try {
    const { size: fileSize } = await fh.stat();
    const cur = new BoundedCursor(fh, fileSize, options.maxHeaderBytes ?? 256 * 1024 * 1024);
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
    const arrayItemTypes = new Map<string, GgufValueType>();
    const invalidUtf8 = new Map<string, Map<number, string>>();
    for (let i = 0n; i < kvCount; i++) {
      const key = await cur.string(`metadata key ${i}`);
      const type = (await cur.u32(`type of ${key}`)) as GgufValueType;
      if (metadata.has(key)) throw new GgufFormatError(`metadata key ${key} appears twice`);
      metadata.set(key, await readValue(cur, type, key, { arrayItemTypes, invalidUtf8 }));
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
      arrayItemTypes,
      invalidUtf8,
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
