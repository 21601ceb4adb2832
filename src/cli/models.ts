import { humanBytes, humanNumber, humanTime, table } from "./format.ts";
import { json, type Target } from "./http.ts";

/** `kekahyde list`, `ps` and `show`: the catalogue, the loaded models and one model's facts, from the daemon's Ollama routes. */

interface ModelDetails {
  format?: string;
  family?: string;
  families?: string[] | null;
  parameter_size?: string;
  quantization_level?: string;
}

export interface TagsModel {
  name: string;
  model?: string;
  modified_at?: string;
  size?: number;
  digest?: string;
  details?: ModelDetails;
}

export interface PsModel extends TagsModel {
  expires_at?: string | null;
  size_vram?: number;
  context_length?: number;
}

export interface ShowResponse {
  modelfile?: string;
  parameters?: string;
  template?: string;
  system?: string;
  license?: string;
  details?: ModelDetails;
  model_info?: Record<string, unknown>;
  capabilities?: string[];
  modified_at?: string;
}

/** The 12 hex digits Ollama shows as a model's ID. */
const shortId = (digest: string | undefined) => (digest ?? "").replace(/^sha256:/, "").slice(0, 12);

const when = (iso: string | undefined | null, now: number) => {
  const t = iso ? new Date(iso) : null;
  return t && !Number.isNaN(t.getTime()) ? humanTime(t, now) : "";
};

export async function listModels(t: Target): Promise<TagsModel[]> {
  return (await json<{ models?: TagsModel[] }>(t, "GET", "/api/tags")).models ?? [];
}

export async function runningModels(t: Target): Promise<PsModel[]> {
  return (await json<{ models?: PsModel[] }>(t, "GET", "/api/ps")).models ?? [];
}

export function formatList(models: TagsModel[], now = Date.now()): string {
  return table(
    ["NAME", "ID", "SIZE", "MODIFIED"],
    models.map((m) => [m.name, shortId(m.digest), m.size === undefined ? "" : humanBytes(m.size), when(m.modified_at, now)]),
  );
}

/** Where a loaded model runs, from how much of it is in VRAM: "100% CPU", "100% GPU" or "48%/52% CPU/GPU". */
export function processor(size: number | undefined, vram: number | undefined): string {
  if (!vram) return "100% CPU";
  if (vram === size) return "100% GPU";
  if (size === undefined || size === 0 || vram > size) return "Unknown";
  const cpu = Math.round(((size - vram) / size) * 100);
  return `${cpu}%/${100 - cpu}% CPU/GPU`;
}

/** When keep-alive unloads a loaded model: "4 minutes from now", "Forever", or "Stopping..." once that time has passed. */
export function until(expiresAt: string | null | undefined, now = Date.now()): string {
  if (!expiresAt) return "Forever";
  const at = new Date(expiresAt);
  if (Number.isNaN(at.getTime())) return "Forever";
  if (at.getTime() <= now) return "Stopping...";
  return humanTime(at, now);
}

export function formatPs(models: PsModel[], now = Date.now()): string {
  return table(
    ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
    models.map((m) => [
      m.name,
      shortId(m.digest),
      m.size === undefined ? "" : humanBytes(m.size),
      processor(m.size, m.size_vram),
      m.context_length === undefined ? "" : String(m.context_length),
      until(m.expires_at, now),
    ]),
  );
}

function section(title: string, rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  const lines = rows.map((r) => `    ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] + 4))).join("")}`.trimEnd());
  return [`  ${title}`, ...lines].join("\n");
}

/** `ollama show`'s summary: Model (architecture, parameters, context, embedding, quantization), Capabilities, Parameters, System, License. */
export function formatShow(show: ShowResponse): string {
  const info = show.model_info ?? {};
  const arch = (info["general.architecture"] as string | undefined) ?? show.details?.family ?? "";
  const count = info["general.parameter_count"];
  const params = show.details?.parameter_size || (typeof count === "number" ? humanNumber(count) : "");
  const model: string[][] = [];
  if (arch) model.push(["architecture", arch]);
  if (params) model.push(["parameters", params]);
  for (const [key, label] of [["context_length", "context length"], ["embedding_length", "embedding length"]]) {
    const v = info[`${arch}.${key}`];
    if (typeof v === "number" || typeof v === "string") model.push([label, String(v)]);
  }
  if (show.details?.quantization_level) model.push(["quantization", show.details.quantization_level]);
  const sections = [section("Model", model)];
  if (show.capabilities?.length) sections.push(section("Capabilities", show.capabilities.map((c) => [c])));
  const parameters = (show.parameters ?? "")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const space = l.search(/\s/);
      return space < 0 ? [l] : [l.slice(0, space), l.slice(space).trim()];
    });
  if (parameters.length) sections.push(section("Parameters", parameters));
  if (show.system?.trim()) sections.push(section("System", show.system.trim().split("\n").slice(0, 2).map((l) => [l])));
  if (show.license?.trim()) sections.push(section("License", show.license.trim().split("\n").slice(0, 2).map((l) => [l])));
  return `${sections.join("\n\n")}\n`;
}

export async function showModel(t: Target, name: string): Promise<ShowResponse> {
  return json<ShowResponse>(t, "POST", "/api/show", { model: name });
}

/** Whether the daemon knows `name` as a model, in its catalogue or loaded; false when it has no Ollama routes. */
export async function isModelName(t: Target, name: string): Promise<boolean> {
  if (/\s/.test(name) || name.length > 256) return false;
  const same = (m: TagsModel) => [m.name, m.model].some((n) => n !== undefined && (n === name || n === `${name}:latest` || n.replace(/:latest$/, "") === name));
  try {
    if ((await listModels(t)).some(same)) return true;
    return (await runningModels(t)).some(same);
  } catch (e) {
    if ((e as { status?: number }).status === 404) return false;
    throw e;
  }
}
