import { open } from "node:fs/promises";
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgmlType, GgufValueType, tensorByteSize } from "./format.ts";

/** A metadata value with its GGUF type spelled out, so the writer never has to guess widths. */
export type GgufValue =
  | { type: GgufValueType.UINT32 | GgufValueType.INT32 | GgufValueType.FLOAT32 | GgufValueType.UINT8; value: number }
  | { type: GgufValueType.UINT64; value: bigint }
  | { type: GgufValueType.BOOL; value: boolean }
  | { type: GgufValueType.STRING; value: string }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType.STRING; value: readonly string[] }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType.FLOAT32 | GgufValueType.INT32 | GgufValueType.UINT32; value: ArrayLike<number> };

export const u32 = (value: number): GgufValue => ({ type: GgufValueType.UINT32, value });
export const f32 = (value: number): GgufValue => ({ type: GgufValueType.FLOAT32, value });
export const bool = (value: boolean): GgufValue => ({ type: GgufValueType.BOOL, value });
export const str = (value: string): GgufValue => ({ type: GgufValueType.STRING, value });
export const strArray = (value: readonly string[]): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value });
export const f32Array = (value: ArrayLike<number>): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value });
export const i32Array = (value: ArrayLike<number>): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value });
export const u32Array = (value: ArrayLike<number>): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.UINT32, value });

export interface GgufTensorSpec {
  name: string;
  /** ggml order: dims[0] is the fastest-varying (row length). */
  dims: readonly number[];
  type: GgmlType;
  /**
   * Produces the tensor's bytes in order, in chunks of any size. Chunks are written as they come, so a
   * multi-gigabyte tensor never has to exist in memory at once.
   */
  data: () => Iterable<Uint8Array>;
}

export interface GgufSpec {
  metadata: ReadonlyArray<readonly [string, GgufValue]>;
  tensors: readonly GgufTensorSpec[];
  alignment?: number;
}

/** Little-endian byte builder for the header part of the file. */
class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;

  private push(buf: Buffer): void {
    this.chunks.push(buf);
    this.length += buf.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  u8(v: number): void {
    this.push(Buffer.from([v & 0xff]));
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.push(bytes);
  }
  zeros(n: number): void {
    if (n > 0) this.push(Buffer.alloc(n));
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function writeValue(sink: ByteSink, v: GgufValue): void {
  sink.u32(v.type);
  switch (v.type) {
    case GgufValueType.UINT32:
      return sink.u32(v.value);
    case GgufValueType.INT32:
      return sink.i32(v.value);
    case GgufValueType.FLOAT32:
      return sink.f32(v.value);
    case GgufValueType.UINT8:
      return sink.u8(v.value);
    case GgufValueType.UINT64:
      return sink.u64(v.value);
    case GgufValueType.BOOL:
      return sink.u8(v.value ? 1 : 0);
    case GgufValueType.STRING:
      return sink.string(v.value);
    case GgufValueType.ARRAY: {
      sink.u32(v.itemType);
      sink.u64(v.value.length);
      if (v.itemType === GgufValueType.STRING) {
        for (const s of v.value) sink.string(s);
      } else {
        const items = v.value;
        for (let i = 0; i < items.length; i++) {
          if (v.itemType === GgufValueType.FLOAT32) sink.f32(items[i]);
          else if (v.itemType === GgufValueType.UINT32) sink.u32(items[i]);
          else sink.i32(items[i]);
        }
      }
      return;
    }
  }
}

const alignUp = (n: bigint, a: bigint): bigint => ((n + a - 1n) / a) * a;

/** Byte size a tensor spec must produce. */
export function tensorSpecBytes(t: GgufTensorSpec): bigint {
  const elements = t.dims.reduce((acc, d) => acc * BigInt(d), 1n);
  const size = tensorByteSize(t.type, elements);
  if (size === null) throw new Error(`tensor ${t.name}: ${elements} elements do not fill whole ${GgmlType[t.type]} blocks`);
  return size;
}

/** Serialises the header (magic .. tensor infos .. padding) and returns it with each tensor's data offset. */
export function encodeGgufHeader(spec: GgufSpec): { header: Buffer; offsets: bigint[]; sizes: bigint[] } {
  const alignment = BigInt(spec.alignment ?? GGUF_DEFAULT_ALIGNMENT);
  const declared = spec.metadata.find(([k]) => k === "general.alignment")?.[1];
  if (alignment !== BigInt(GGUF_DEFAULT_ALIGNMENT) && (declared?.type !== GgufValueType.UINT32 || BigInt(declared.value) !== alignment)) {
    throw new Error(`a layout aligned to ${alignment} must say so in general.alignment (a UINT32)`);
  }
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(spec.tensors.length);
  sink.u64(spec.metadata.length);
  for (const [key, value] of spec.metadata) {
    sink.string(key);
    writeValue(sink, value);
  }
  const offsets: bigint[] = [];
  const sizes: bigint[] = [];
  let offset = 0n;
  for (const t of spec.tensors) {
    const size = tensorSpecBytes(t);
    sink.string(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.u64(d);
    sink.u32(t.type);
    sink.u64(offset);
    offsets.push(offset);
    sizes.push(size);
    offset = alignUp(offset + size, alignment);
  }
  sink.zeros(Number(alignUp(BigInt(sink.length), alignment) - BigInt(sink.length)));
  return { header: sink.toBuffer(), offsets, sizes };
}

/** Writes a complete GGUF v3 file. Returns its size in bytes. */
export async function writeGguf(path: string, spec: GgufSpec): Promise<number> {
  const alignment = BigInt(spec.alignment ?? GGUF_DEFAULT_ALIGNMENT);
  const { header, sizes } = encodeGgufHeader(spec);
  const fh = await open(path, "w");
  try {
    let position = header.length;
    await fh.write(header, 0, header.length, 0);
    for (let i = 0; i < spec.tensors.length; i++) {
      const t = spec.tensors[i];
      let written = 0n;
      for (const chunk of t.data()) {
        await fh.write(chunk, 0, chunk.length, position);
        position += chunk.length;
        written += BigInt(chunk.length);
      }
      if (written !== sizes[i]) throw new Error(`tensor ${t.name}: produced ${written} bytes, expected ${sizes[i]}`);
      const pad = Number(alignUp(written, alignment) - written);
      if (pad > 0 && i < spec.tensors.length - 1) {
        await fh.write(Buffer.alloc(pad), 0, pad, position);
        position += pad;
      }
    }
    return position;
  } finally {
    await fh.close();
  }
}
