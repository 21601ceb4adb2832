import { realpath, stat } from "node:fs/promises";
import { resolve, sep } from "node:path";
import { KekahydeError } from "../errors.ts";
import { GgufFormatError, readGgufInfo, type GgufInfo } from "../gguf/reader.ts";

export interface ModelFilePolicy {
  /** When not empty, models must lie inside one of these folders (after resolving symlinks and ".."). */
  allowedDirs: readonly string[];
}

const inside = (path: string, dir: string) => path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

async function checkAllowed(path: string, allowedDirs: readonly string[]): Promise<void> {
  if (allowedDirs.length === 0) return;
  const dirs = await Promise.all(allowedDirs.map((d) => realpath(resolve(d)).catch(() => resolve(d))));
  let real = path;
  try {
    real = await realpath(path);
  } catch {
    // A missing file is judged by its lexical path, so a probe outside the folders learns nothing.
  }
  if (!dirs.some((d) => inside(path, d) && inside(real, d))) {
    throw new KekahydeError("MODEL_FORBIDDEN", `${path} is outside the allowed model folders (${dirs.join(", ")}). Put the model in one of them, or start the daemon with --models-dir for its folder.`, {
      path,
      allowed_dirs: dirs,
    });
  }
}

/**
 * Checks a model path before any engine sees it: that it exists, is a regular file and carries a sane GGUF
 * header whose tensors all lie inside the file. Everything the native loader could hang or crash on is
 * rejected here with a reason a person can act on. Read once per load (the plan carries what it found).
 */
export async function inspectModelFile(rawPath: string, policy: ModelFilePolicy = { allowedDirs: [] }): Promise<{ path: string; gguf: GgufInfo; mtimeMs: number }> {
  let path = resolve(rawPath);
  await checkAllowed(path, policy.allowedDirs);
  let st;
  try {
    // From here on the real path is used, so a symlink swapped after the check cannot redirect the load.
    path = await realpath(path);
    st = await stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new KekahydeError("MODEL_NOT_FOUND", `No file at ${path}. Check the path (relative paths resolve against the daemon's working directory).`, { path });
    }
    throw new KekahydeError("MODEL_INVALID", `Cannot read ${path} (${code ?? "unknown error"}). Check its permissions.`, { path });
  }
  if (!st.isFile()) {
    const kind = st.isDirectory() ? "a directory" : st.isFIFO() ? "a FIFO" : st.isCharacterDevice() || st.isBlockDevice() ? "a device" : "not a regular file";
    throw new KekahydeError("MODEL_INVALID", `${path} is ${kind}, not a GGUF model file. Pass the path of a .gguf file.`, { path });
  }
  try {
    return { path, gguf: await readGgufInfo(path), mtimeMs: st.mtimeMs };
  } catch (e) {
    if (e instanceof GgufFormatError) {
      throw new KekahydeError("MODEL_INVALID", `${path} is not a loadable GGUF model: ${e.message}. Use a complete .gguf file (re-download or re-convert it).`, { path });
    }
    const code = (e as NodeJS.ErrnoException).code;
    throw new KekahydeError("MODEL_INVALID", `Cannot read ${path} (${code ?? (e as Error).message}). Check its permissions.`, { path });
  }
}
