import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";

/** The XDG base directory spec ignores relative paths in its variables; so do we. */
const absolute = (value: string | undefined): string | null => (value && isAbsolute(value) ? value : null);

const home = (env: NodeJS.ProcessEnv): string => absolute(env.HOME) ?? homedir();

/** `$XDG_DATA_HOME/kekahyde/models`, else `~/.local/share/kekahyde/models`. Not created by the catalogue. */
export function defaultModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(absolute(env.XDG_DATA_HOME) ?? join(home(env), ".local", "share"), "kekahyde", "models");
}

/** `$XDG_CACHE_HOME/kekahyde/digests.json`, else `~/.cache/kekahyde/digests.json`: where digests persist. */
export function defaultDigestCacheFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(absolute(env.XDG_CACHE_HOME) ?? join(home(env), ".cache"), "kekahyde", "digests.json");
}
