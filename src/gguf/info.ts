import type { GgmlType, GgufValueType } from "./format.ts";

/**
 * What the bounded reader (reader.ts) makes of a GGUF header, and how it refuses one: shared by the reader
 * and the checks it runs (modelChecks.ts), which import nothing else of each other.
 */

export class GgufFormatError extends Error {
  override name = "GgufFormatError";
}

/**
 * A header that would take more memory (or more bytes) to read than the reader allows: whether it is valid
 * or not, it is not read on, so that no file in a models folder can make the daemon run out of memory.
 */
export class GgufTooLargeError extends GgufFormatError {
  override name = "GgufTooLargeError";
}

export type GgufScalar = number | bigint | boolean | string;
/**
 * Metadata as read: scalars as values, arrays as arrays. Arrays of more than 4096 items keep none (`[]`), but
 * the vocabulary, which keeps its first items (see ReadGgufOptions.vocabulary); `arrayLengths` has the counts.
 */
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
  /** The item count of every array in the metadata, kept or not: its value in `metadata` may hold fewer. */
  arrayLengths: Map<string, number>;
  /**
   * tokenizer.ggml.tokens, counted whole even where only its first tokens were kept: how many (0 without a
   * token list), and the bytes of all their texts.
   */
  vocabulary: { tokens: number; textBytes: number };
  /**
   * Items of string arrays whose bytes are not valid UTF-8, by key and index: their exact bytes as latin1 (the
   * metadata holds them decoded, with U+FFFD). Only for items that were kept.
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
