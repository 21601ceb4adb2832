import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { KekahydeError } from "../errors.ts";
import { GgufFormatError, readGgufInfo, type GgufInfo } from "../gguf/reader.ts";

/**
 * Checks a model path before any engine sees it: that it exists, is a regular file and carries a sane GGUF
 * header whose tensors all lie inside the file. Everything the native loader could hang or crash on is
 * rejected here with a reason a person can act on.
 */
export async function inspectModelFile(rawPath: string): Promise<{ path: string; gguf: GgufInfo }> {
  const path = resolve(rawPath);
  let st;
  try {
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
    return { path, gguf: await readGgufInfo(path) };
  } catch (e) {
    if (e instanceof GgufFormatError) {
      throw new KekahydeError("MODEL_INVALID", `${path} is not a loadable GGUF model: ${e.message}. Use a complete .gguf file (re-download or re-convert it).`, { path });
    }
    const code = (e as NodeJS.ErrnoException).code;
    throw new KekahydeError("MODEL_INVALID", `Cannot read ${path} (${code ?? (e as Error).message}). Check its permissions.`, { path });
  }
}
