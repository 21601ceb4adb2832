/** What the catalogue says about models; see docs/models.md. */

export interface ModelFacts {
  /** general.architecture, e.g. "llama" (Ollama's "family"). */
  architecture: string;
  /** general.name */
  name: string | null;
  /** Sum over tensors of the product of their dimensions. */
  parameterCount: number;
  /** Ollama's style: "110.60M", "1.1B", "7.6B" (format.HumanNumber). */
  parameterSize: string;
  /**
   * llama.cpp's name: "Q4_K_M", "Q8_0", "F16", "BF16", ...; from general.file_type, else guessed from the most
   * common weight-matrix tensor type; "unknown" when neither says.
   */
  quantization: string;
  /** general.file_type */
  fileType: number | null;
  /** <arch>.context_length */
  contextLength: number | null;
  /** <arch>.embedding_length */
  embeddingLength: number | null;
  /** tokenizer.chat_template */
  chatTemplate: string | null;
  /** The chat template renders tools (it uses a `tools` variable, as Llama 3.1 / Qwen 2.5 / Mistral templates do). */
  templateSupportsTools: boolean;
  /** <arch>.pooling_type (llama.cpp's enum: 1 mean, 2 cls, 3 last, 4 rank); null when the file has none. */
  poolingType: number | null;
}

export interface CatalogueEntry {
  /** Canonical name, never ending in ":latest". */
  name: string;
  /** Absolute real path (symlinks resolved). */
  path: string;
  /** The models directory it was found in (absolute). */
  dir: string;
  size: number;
  modifiedAt: Date;
  /** "sha256:<64 hex>" once computed in the background; null until then (and for files with a problem). */
  digest: string | null;
  /** null when the file is not a readable GGUF (the bounded reader refused it). */
  facts: ModelFacts | null;
  /** Why facts is null (the reader's message), for listings and logs. */
  problem: string | null;
}

export type CatalogueWarning = (message: string, details: Record<string, unknown>) => void;

export interface CatalogueOptions {
  /** The models directories, in order of precedence. Missing ones are fine (empty). */
  dirs: readonly string[];
  /** Called once per clash, unusable name, or digest cache trouble. */
  onWarning?: CatalogueWarning;
  /**
   * Where digests persist across restarts (JSON); null or absent: in memory only. The daemon passes
   * defaultDigestCacheFile().
   */
  digestCacheFile?: string | null;
}

export interface Catalogue {
  readonly dirs: readonly string[];
  /**
   * Every model in the directories, as of now: a fresh readdir + stat each call (cheap); GGUF facts and
   * digests cached by path+size+mtime. Sorted by name. Entries with a problem are included.
   */
  list(): Promise<CatalogueEntry[]>;
  /**
   * The entry a name refers to ("x", "x:latest", "family:tag"), or null. Case-sensitive. A name longer than
   * MAX_REQUESTED_NAME_LENGTH names nothing: a BAD_REQUEST KekahydeError (field "model") says so.
   */
  find(name: string): Promise<CatalogueEntry | null>;
  /**
   * Up to `limit` (default 5) catalogue names closest to `name` (edit distance, prefix matches first), for
   * "did you mean" messages; a BAD_REQUEST for a name longer than MAX_REQUESTED_NAME_LENGTH, as find.
   */
  closeNames(name: string, limit?: number): Promise<string[]>;
  /**
   * The facts of a model file outside the models directories (a model loaded by path), read with the same
   * bounded reader and cached by path, size and modification time; null for a file that cannot be read.
   */
  factsOf(path: string): Promise<ModelFacts | null>;
  /** Resolves once every digest known now has been computed (tests, benchmarks). */
  digestsSettled(): Promise<void>;
  /** Stops background work (digests). */
  close(): void;
}
