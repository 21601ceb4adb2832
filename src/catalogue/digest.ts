import { createHash } from "node:crypto";
import { mkdir, open, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { CatalogueWarning } from "./types.ts";

/**
 * sha256 digests of model files, computed in the background: one file at a time, smallest first, streamed in
 * 1 MiB chunks (each costs about a millisecond of hashing on the event loop, the reads happen off it).
 * Digests are cached by path + size + mtime, in memory and, when a cache file is given, on disk, so a restart
 * does not rehash. A file that changes while it is hashed gets no digest; the next listing queues it again.
 */

export interface FileVersion {
  path: string;
  size: number;
  mtimeMs: number;
}

interface CachedDigest extends FileVersion {
  digest: string;
}

const CHUNK = 1 << 20;
/** Entries kept in the cache file; the oldest go first. */
const MAX_PERSISTED = 1000;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

const sameVersion = (a: { size: number; mtimeMs: number }, b: { size: number; mtimeMs: number }) => a.size === b.size && a.mtimeMs === b.mtimeMs;

/** Hashes a file's bytes; null if the file changed (size or mtime) while it was read, or `signal` aborted. */
async function sha256File(file: FileVersion, signal?: AbortSignal): Promise<string | null> {
  const fh = await open(file.path, "r");
  try {
    const before = await fh.stat();
    if (!sameVersion(file, before)) return null;
    const hash = createHash("sha256");
    // Two buffers: the next chunk is read (off the event loop) while this one is hashed (on it).
    const buffers = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    const readAt = (position: number, i: number) => fh.read(buffers[i % 2], 0, Math.min(CHUNK, before.size - position), position);
    let reading = before.size > 0 ? readAt(0, 0) : null;
    for (let position = 0, i = 0; reading; i++) {
      const { bytesRead } = await reading;
      if (bytesRead === 0 || signal?.aborted) {
        return null; // shrank under us, or stopped
      }
      position += bytesRead;
      reading = position < before.size ? readAt(position, i + 1) : null;
      hash.update(buffers[i % 2].subarray(0, bytesRead));
    }
    const after = await fh.stat();
    if (!sameVersion(file, after)) return null;
    return `sha256:${hash.digest("hex")}`;
  } finally {
    await fh.close();
  }
}

export class DigestWorker {
  private readonly cache = new Map<string, CachedDigest>();
  private readonly pending = new Map<string, { file: FileVersion; done: Promise<void>; resolve: () => void }>();
  private running: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private loaded: Promise<void>;
  private persistQueue: Promise<void> = Promise.resolve();
  private persistScheduled = false;
  private warnedWrite = false;
  private closed = false;

  constructor(
    private readonly cacheFile: string | null,
    private readonly warn: CatalogueWarning,
  ) {
    this.loaded = cacheFile ? this.load(cacheFile) : Promise.resolve();
  }

  /** Resolves once the persisted cache has been read (or found missing or corrupt). */
  ready(): Promise<void> {
    return this.loaded;
  }

  /** The digest of this version of the file, if known. */
  get(file: FileVersion): string | null {
    const hit = this.cache.get(file.path);
    return hit && sameVersion(hit, file) ? hit.digest : null;
  }

  /** Queues the file unless its digest is known or already queued. */
  request(file: FileVersion): void {
    if (this.closed || this.get(file) !== null) return;
    const queued = this.pending.get(file.path);
    if (queued && sameVersion(queued.file, file)) return;
    queued?.resolve();
    let resolve!: () => void;
    const done = new Promise<void>((r) => (resolve = r));
    this.pending.set(file.path, { file, done, resolve });
    this.running ??= this.drain();
  }

  /** Resolves once every file queued so far has been hashed (or given up on), and the cache file written. */
  async settled(): Promise<void> {
    await Promise.all([...this.pending.values()].map((p) => p.done));
    await this.persistQueue;
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
    for (const p of this.pending.values()) p.resolve();
    this.pending.clear();
  }

  private async drain(): Promise<void> {
    await this.loaded;
    while (!this.closed && this.pending.size > 0) {
      // Smallest first: many small models get their digests before one large one is through.
      let next: { file: FileVersion; resolve: () => void } | null = null;
      for (const p of this.pending.values()) if (!next || p.file.size < next.file.size) next = p;
      const { file, resolve } = next!;
      try {
        const digest = await sha256File(file, this.abort.signal);
        if (digest && !this.closed) {
          this.cache.delete(file.path); // re-inserted last: the newest entries are kept longest
          this.cache.set(file.path, { ...file, digest });
          if (this.cacheFile) this.persist(this.cacheFile);
        }
      } catch {
        // Gone or unreadable since it was listed: the next listing says so, and queues it again if it is back.
      }
      if (this.pending.get(file.path)?.file === file) this.pending.delete(file.path);
      resolve();
    }
    this.running = null;
  }

  private async load(file: string): Promise<void> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.warn("cannot read the digest cache; digests will be computed again", { file, error: (e as Error).message });
      return;
    }
    try {
      const parsed: unknown = JSON.parse(text);
      const entries = (parsed as { digests?: unknown })?.digests;
      if (!Array.isArray(entries)) throw new Error("no digests array");
      for (const e of entries as Array<Partial<CachedDigest>>) {
        if (typeof e?.path === "string" && Number.isSafeInteger(e.size) && Number.isFinite(e.mtimeMs) && typeof e.digest === "string" && DIGEST.test(e.digest)) {
          this.cache.set(e.path, { path: e.path, size: e.size!, mtimeMs: e.mtimeMs!, digest: e.digest });
        }
      }
    } catch (e) {
      this.warn("the digest cache is corrupt; it is ignored and will be rewritten", { file, error: (e as Error).message });
      this.cache.clear();
    }
  }

  /** Writes the cache file (atomically: a temporary file renamed over it), one write at a time. */
  private persist(file: string): void {
    if (this.persistScheduled) return; // the write already queued will include this digest
    this.persistScheduled = true;
    this.persistQueue = this.persistQueue.then(async () => {
      this.persistScheduled = false;
      const digests = [...this.cache.values()].slice(-MAX_PERSISTED);
      const tmp = `${file}.${process.pid}.tmp`;
      try {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(tmp, JSON.stringify({ version: 1, digests }, null, 1) + "\n");
        await rename(tmp, file);
      } catch (e) {
        if (!this.warnedWrite) this.warn("cannot write the digest cache; digests stay in memory", { file, error: (e as Error).message });
        this.warnedWrite = true;
      }
    });
  }
}
