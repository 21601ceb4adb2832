/**
 * Model names: what a file is called in the catalogue, Ollama's `name:tag` form, and "did you mean".
 * Pure functions; see docs/models.md for the rules.
 */

const LATEST = "latest";
/** Longest name the catalogue gives a file. */
const MAX_NAME_LENGTH = 128;
/**
 * Longest name a request may ask for: Ollama's longest name part, a registry host, may be 350 characters (its
 * types/model/name.go). No file in the catalogue has a name over MAX_NAME_LENGTH and a model loaded by path is
 * named after its file (at most 255 bytes), so a longer name names nothing; refusing it at once also keeps
 * the search for close names short.
 */
export const MAX_REQUESTED_NAME_LENGTH = 350;
/** Characters a name may hold, so that it travels unescaped in JSON bodies and URL paths. */
const NAME_CHARS = /^[A-Za-z0-9._:@/-]+$/;
const GGUF_EXTENSION = /\.gguf$/i;

/**
 * Splits "name:tag"; "name" and "name:latest" both give { base: "name", tag: "latest" }. The tag is what
 * follows the last ":" after the last "/" (Ollama's rule, so "host:5000/x" has no tag).
 */
export function parseModelName(name: string): { base: string; tag: string } {
  const colon = name.lastIndexOf(":");
  if (colon === -1 || colon < name.lastIndexOf("/")) return { base: name, tag: LATEST };
  return { base: name.slice(0, colon), tag: name.slice(colon + 1) };
}

/** The canonical form: "name" for tag latest, else "name:tag". */
export function canonicalModelName(name: string): string {
  const { base, tag } = parseModelName(name);
  return tag === LATEST ? base : `${base}:${tag}`;
}

export const isGgufFileName = (fileName: string): boolean => GGUF_EXTENSION.test(fileName) && !fileName.startsWith(".");

/**
 * The canonical name of a file found in a models directory: `x.gguf` at the top → "x"; `family/tag.gguf` one
 * folder down → "family:tag" ("family" for `family/latest.gguf`). The file's case is kept.
 */
export function nameForFile(fileName: string, folder: string | null): string {
  const stem = fileName.replace(GGUF_EXTENSION, "");
  return canonicalModelName(folder === null ? stem : `${folder}:${stem}`);
}

/**
 * Why a derived name cannot be used, or null when it can: at most 128 characters of `[A-Za-z0-9._:@/-]`, at
 * most one ":" (one tag), neither the name nor the tag empty.
 */
export function nameProblem(name: string): string | null {
  if (name.length > MAX_NAME_LENGTH) return `the name would be ${name.length} characters long, more than ${MAX_NAME_LENGTH}`;
  if (!NAME_CHARS.test(name)) return "the name would hold characters other than letters, digits and . _ : @ / -";
  if (name.split(":").length > 2) return 'the name would hold more than one ":" (a file name or folder with ":" in it)';
  const { base, tag } = parseModelName(name);
  if (base === "" || tag === "") return "the name or its tag would be empty";
  return null;
}

/** Why a request's model name can name no model, or null: it is longer than MAX_REQUESTED_NAME_LENGTH. */
export function requestedNameProblem(name: string): string | null {
  if (name.length <= MAX_REQUESTED_NAME_LENGTH) return null;
  return `is ${name.length} characters long, but a model name is at most ${MAX_REQUESTED_NAME_LENGTH} characters`;
}

/**
 * Levenshtein distance (insertions, deletions, substitutions each cost 1). With `atMost`, any distance over it
 * comes back as atMost + 1, found early: at the length difference, or at the first row whose every cell is over it.
 */
export function editDistance(a: string, b: string, atMost = Infinity): number {
  if (a === b) return 0;
  if (Math.abs(a.length - b.length) > atMost) return atMost + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      best = Math.min(best, row[j]);
    }
    // A row's smallest cell never shrinks in the rows below it.
    if (best > atMost) return atMost + 1;
    prev = row;
  }
  return Math.min(prev[b.length], atMost + 1);
}

/**
 * Up to `limit` of `names` closest to `wanted`, for "did you mean": names that start with what was asked
 * (or with its family and a ":") first, then by edit distance, ignoring case. A name further than a third of the
 * longer one's length (at least 2 edits) is not suggested: it would not help. Bounded: a name longer than
 * MAX_REQUESTED_NAME_LENGTH gets no suggestions, and a distance is only worked out as far as it could matter.
 */
export function rankCloseNames(wanted: string, names: readonly string[], limit = 5): string[] {
  if (requestedNameProblem(wanted) !== null) return [];
  const query = canonicalModelName(wanted).toLowerCase();
  const queryBase = parseModelName(query).base;
  const scored: Array<{ name: string; prefix: boolean; distance: number }> = [];
  for (const name of names) {
    const lower = name.toLowerCase();
    const prefix = query.length > 0 && (lower.startsWith(query) || lower.startsWith(`${queryBase}:`));
    const farthest = Math.max(2, Math.floor(Math.max(query.length, lower.length) / 3));
    const distance = editDistance(query, lower, prefix ? Infinity : farthest);
    if (!prefix && distance > farthest) continue;
    scored.push({ name, prefix, distance });
  }
  scored.sort((a, b) => Number(b.prefix) - Number(a.prefix) || a.distance - b.distance || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return scored.slice(0, Math.max(0, limit)).map((s) => s.name);
}
