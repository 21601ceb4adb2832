import type { Dirent } from "node:fs";
import { readdir, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { isGgufFileName, nameForFile, nameProblem } from "./names.ts";

/**
 * One pass over the models directories: readdir + realpath + stat, nothing read from the files. Decides each
 * file's name and settles clashes; see docs/models.md.
 */

export interface FoundFile {
  name: string;
  /** The configured directory it was found in. */
  dir: string;
  /** Where it was found (dir/…), as a person would spell it. */
  foundAt: string;
  /** Its real path (symlinks resolved). */
  path: string;
  size: number;
  mtimeMs: number;
}

/** Reports a problem once per key, however often the directories are scanned. */
export type WarnOnce = (key: string, message: string, details: Record<string, unknown>) => void;

const inside = (path: string, dir: string) => path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
const byName = (a: Dirent, b: Dirent) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

async function entries(dir: string, warnOnce: WarnOnce): Promise<Dirent[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((d) => !d.name.startsWith(".")).sort(byName);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // A directory that does not exist (yet) is an empty one.
    if (code !== "ENOENT" && code !== "ENOTDIR") warnOnce(`readdir:${dir}:${code}`, "cannot read a models directory", { dir, error: code ?? (e as Error).message });
    return [];
  }
}

/** Whether a directory entry is a folder, following a symlink (one readdir already says, unless it is a link). */
async function isFolder(dir: string, d: Dirent): Promise<boolean> {
  if (d.isDirectory()) return true;
  if (!d.isSymbolicLink()) return false;
  return stat(join(dir, d.name)).then((s) => s.isDirectory(), () => false);
}

interface Candidate {
  name: string;
  foundAt: string;
}

/** The .gguf files of one directory, top-level files first, then one level of sub-folders, each sorted. */
async function candidates(dir: string, warnOnce: WarnOnce): Promise<Candidate[]> {
  const top = await entries(dir, warnOnce);
  const files: Candidate[] = [];
  const folders: string[] = [];
  for (const d of top) {
    if (await isFolder(dir, d)) folders.push(d.name);
    else if (isGgufFileName(d.name)) files.push({ name: nameForFile(d.name, null), foundAt: join(dir, d.name) });
  }
  for (const folder of folders) {
    for (const d of await entries(join(dir, folder), warnOnce)) {
      // Folders two levels down are not looked into.
      if (!d.isDirectory() && isGgufFileName(d.name)) files.push({ name: nameForFile(d.name, folder), foundAt: join(dir, folder, d.name) });
    }
  }
  return files;
}

/** Every model file in `dirs` with its name; the first directory, then the top level, wins a clash. */
export async function scanDirs(dirs: readonly string[], warnOnce: WarnOnce): Promise<FoundFile[]> {
  const perDir = await Promise.all(
    dirs.map(async (dir) => {
      const realDir = await realpath(dir).catch(() => null);
      if (realDir === null) return { dir, realDir, files: [] as Array<FoundFile | null> };
      const found = await candidates(dir, warnOnce);
      const files = await Promise.all(
        found.map(async ({ name, foundAt }): Promise<FoundFile | null> => {
          try {
            const path = await realpath(foundAt);
            const st = await stat(path);
            if (!st.isFile()) return null;
            if (!inside(path, realDir)) {
              warnOnce(`outside:${foundAt}:${path}`, "a model file is a link to outside its models directory, where it could not be loaded from; it is not listed", {
                file: foundAt,
                target: path,
                dir,
              });
              return null;
            }
            return { name, dir, foundAt, path, size: st.size, mtimeMs: st.mtimeMs };
          } catch {
            return null; // gone since readdir, or a dangling link
          }
        }),
      );
      return { dir, realDir, files };
    }),
  );

  const byName = new Map<string, FoundFile>();
  const seenDirs = new Set<string>();
  for (const { realDir, files } of perDir) {
    if (realDir === null || seenDirs.has(realDir)) continue; // the same directory named twice is scanned once
    seenDirs.add(realDir);
    for (const f of files) {
      if (!f) continue;
      const problem = nameProblem(f.name);
      if (problem) {
        warnOnce(`name:${f.foundAt}`, `a model file is not listed: ${problem}; rename it`, { file: f.foundAt, name: f.name });
        continue;
      }
      const winner = byName.get(f.name);
      if (winner) {
        warnOnce(`clash:${f.name}:${winner.foundAt}:${f.foundAt}`, `two model files are both named "${f.name}"; the first is listed, the second is not: rename one`, {
          name: f.name,
          kept: winner.foundAt,
          ignored: f.foundAt,
        });
        continue;
      }
      byName.set(f.name, f);
    }
  }
  return [...byName.values()];
}
