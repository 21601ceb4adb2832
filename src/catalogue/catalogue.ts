import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { KekahydeError } from "../errors.ts";
import { GgufFormatError, GgufTooLargeError, HEADER_READS_AT_ONCE, readGgufInfo } from "../gguf/reader.ts";
import { DigestWorker } from "./digest.ts";
import { modelFacts } from "./facts.ts";
import { canonicalModelName, MAX_REQUESTED_NAME_LENGTH, rankCloseNames, requestedNameProblem } from "./names.ts";
import { scanDirs, type FoundFile, type WarnOnce } from "./scan.ts";
import type { Catalogue, CatalogueEntry, CatalogueOptions, ModelFacts } from "./types.ts";

/**
 * The models in the models directories, by name. Every call looks at the directories afresh (readdir + stat),
 * so files added, changed or removed show at once; what costs more is cached by path + size + mtime: the GGUF
 * facts (read with the bounded reader once per version of a file) and the sha256 digests (computed in the
 * background, one file at a time; see digest.ts). A header is read for what a listing shows: its vocabulary
 * is counted, not kept, and the reader runs at most HEADER_READS_AT_ONCE reads at once however many
 * listings and lookups ask, so no file in the folders can exhaust the daemon's memory.
 */

interface FactsResult {
  facts: ModelFacts | null;
  problem: string | null;
}

interface CachedFacts extends FactsResult {
  size: number;
  mtimeMs: number;
}

/** Headers read at once on a first scan: as many as the reader runs at once. */
const READ_CONCURRENCY = HEADER_READS_AT_ONCE;

/** A 400 for a name no model can have, before the folders are looked at or any name compared with it. */
function checkRequestedName(name: string): void {
  const problem = requestedNameProblem(name);
  if (problem !== null) {
    throw new KekahydeError("BAD_REQUEST", `"model" ${problem}.`, { field: "model", length: name.length, max_length: MAX_REQUESTED_NAME_LENGTH });
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function createCatalogue(options: CatalogueOptions): Catalogue {
  const dirs = Object.freeze([...new Set(options.dirs.map((d) => resolve(d)))]);
  const onWarning = options.onWarning ?? (() => {});
  const warned = new Set<string>();
  const warnOnce: WarnOnce = (key, message, details) => {
    if (warned.has(key)) return;
    warned.add(key);
    onWarning(message, details);
  };
  const factsCache = new Map<string, CachedFacts>();
  const reading = new Map<string, Promise<FactsResult | null>>();
  const digests = new DigestWorker(options.digestCacheFile ?? null, onWarning);

  /** The facts of this version of the file; null when it vanished before it could be read. */
  function factsFor(file: FoundFile): Promise<FactsResult | null> {
    const cached = factsCache.get(file.path);
    if (cached && cached.size === file.size && cached.mtimeMs === file.mtimeMs) return Promise.resolve(cached);
    const key = `${file.path}\0${file.size}\0${file.mtimeMs}`;
    let p = reading.get(key);
    if (!p) {
      p = (async (): Promise<FactsResult | null> => {
        try {
          // A listing needs the vocabulary's size, not its tokens (the checks look at the first 4096).
          const info = await readGgufInfo(file.path, { vocabulary: "counted" });
          const result = { facts: modelFacts(info), problem: null };
          // Changed between stat and read: give what was read, but do not cache it against the old version.
          if (info.fileSize === file.size) factsCache.set(file.path, { ...result, size: file.size, mtimeMs: file.mtimeMs });
          return result;
        } catch (e) {
          if (e instanceof GgufFormatError) {
            if (e instanceof GgufTooLargeError) {
              warnOnce(`too-large:${key}`, "a model file's header is too large to read; it is listed without facts and will not load", { file: file.path, problem: e.message });
            }
            const result = { facts: null, problem: e.message };
            factsCache.set(file.path, { ...result, size: file.size, mtimeMs: file.mtimeMs });
            return result;
          }
          const code = (e as NodeJS.ErrnoException).code;
          if (code === "ENOENT") return null;
          // Not cached: permissions can change without changing the file's mtime.
          return { facts: null, problem: `cannot read the file (${code ?? (e as Error).message})` };
        } finally {
          reading.delete(key);
        }
      })();
      reading.set(key, p);
    }
    return p;
  }

  function entry(file: FoundFile, result: FactsResult): CatalogueEntry {
    const version = { path: file.path, size: file.size, mtimeMs: file.mtimeMs };
    // Only readable models are hashed: a file the reader refused may be any size of anything.
    if (result.facts) digests.request(version);
    return {
      name: file.name,
      path: file.path,
      dir: file.dir,
      size: file.size,
      modifiedAt: new Date(file.mtimeMs),
      digest: result.facts ? digests.get(version) : null,
      facts: result.facts,
      problem: result.problem,
    };
  }

  async function scan(): Promise<FoundFile[]> {
    await digests.ready(); // so that digests persisted by an earlier run are known
    return scanDirs(dirs, warnOnce);
  }

  async function list(): Promise<CatalogueEntry[]> {
    const found = await scan();
    const results = await mapLimit(found, READ_CONCURRENCY, factsFor);
    const present = new Set(found.map((f) => f.path));
    for (const path of factsCache.keys()) if (!present.has(path)) factsCache.delete(path);
    const entries: CatalogueEntry[] = [];
    found.forEach((file, i) => {
      const result = results[i];
      if (result) entries.push(entry(file, result));
    });
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  return {
    dirs,
    list,
    // Both look at the directories afresh too, but read no file's header but the one asked for.
    async find(name) {
      checkRequestedName(name);
      const wanted = canonicalModelName(name);
      const file = (await scan()).find((f) => f.name === wanted);
      const result = file && (await factsFor(file));
      return file && result ? entry(file, result) : null;
    },
    async closeNames(name, limit = 5) {
      checkRequestedName(name);
      return rankCloseNames(
        name,
        (await scan()).map((f) => f.name),
        limit,
      );
    },
    async factsOf(path) {
      const found = await stat(path).catch(() => null);
      if (!found?.isFile()) return null;
      const file: FoundFile = { name: "", dir: "", foundAt: path, path, size: found.size, mtimeMs: found.mtimeMs };
      return (await factsFor(file))?.facts ?? null;
    },
    digestsSettled: () => digests.settled(),
    close: () => digests.close(),
  };
}
