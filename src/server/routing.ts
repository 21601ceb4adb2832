import { canonicalModelName } from "../catalogue/index.ts";
import { defaultModelName, type LoadSettings } from "../domain/models.ts";
import { KekahydeError } from "../errors.ts";
import type { SupervisorSnapshot } from "../machines/selectors.ts";
import { defaultModel } from "../machines/supervisorMachine.ts";
import type { RouteDeps } from "./runtime.ts";

/**
 * Which model a request goes to: the one place the routes decide it. One function per policy, all on one
 * lookup by name (`byName`: a loaded model by the name as written, then as Ollama writes it, "x" = "x:latest";
 * else the models directories' file of that name, loaded on first use: the request carries it in `load`, the
 * supervisor loads it and the request waits; else nowhere, with the names that come close).
 *
 * | policy | routes | no name | a name that is nowhere | keep_alive | first-use load's context |
 * | --- | --- | --- | --- | --- | --- |
 * | `kekahydeRouting` | /run_prompt, /tokenize, /detokenize | default model | the supervisor's 404 UNKNOWN_MODEL for the canonical name, with close names | kept | the plan's |
 * | `openAiRouting` | /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank, /rerank, /v1/reranking | default model | the default model while at most one is loaded; else the supervisor's 404 for the name as written, no close names | (none) | the plan's |
 * | `ollamaRouting` | /api/generate, /api/chat, /api/embed, /api/embeddings | (required) | Ollama's 404, thrown here (`ollamaNotFound`, /api/show's too) | kept | `options.num_ctx` |
 * | `loadTarget` | /load_model (and its `draft_model`) | (a path is required) | 404 UNKNOWN_MODEL naming the models directories | kept by the route | `context_size` |
 *
 * No model and nothing loaded: the supervisor's 409 NO_MODEL.
 */

/**
 * Where a request goes, as the supervisor's RUN takes it: a model's name (none: the default model), how long
 * that model then stays loaded, the file to load first when the model is not loaded but is in the models
 * directories, or the names that come close when it is nowhere (for the refusal).
 */
export interface Routing {
  model?: string;
  keepAliveMs?: number;
  load?: { path: string; settings?: LoadSettings };
  suggestions?: string[];
}

/** What a Kekahyde request asks for (`"model"`, `"keep_alive"`; src/server/validation.ts `parseRouting`). */
export type AskedRouting = Pick<Routing, "model" | "keepAliveMs">;

const closeNames = (close: readonly string[]): string => (close.length ? `; close names: ${close.join(", ")}` : "");

/** The models directories' file of a canonical name, or the names that come close to it. */
async function inCatalogue(deps: RouteDeps, name: string): Promise<{ path: string } | { close: string[] }> {
  const entry = await deps.catalogue.find(name);
  return entry ? { path: entry.path } : { close: await deps.catalogue.closeNames(name) };
}

/**
 * The lookup every policy shares: a loaded model by that name (as written, then canonical); else the models
 * directories' file of that name, loaded first; else nowhere, with the names that come close.
 */
async function byName(deps: RouteDeps, requested: string): Promise<{ model: string } & Pick<Routing, "load" | "suggestions">> {
  const { models } = deps.supervisor.getSnapshot().context;
  if (requested in models) return { model: requested };
  const name = canonicalModelName(requested);
  if (name in models) return { model: name };
  const found = await inCatalogue(deps, name);
  return "path" in found ? { model: name, load: { path: found.path } } : { model: name, suggestions: found.close };
}

/**
 * Kekahyde's routes (`"model"` optional): that model (loaded on first use; an unknown name is refused by the
 * supervisor with the close names), else the default model. `keep_alive` is kept.
 */
export async function kekahydeRouting(deps: RouteDeps, asked: AskedRouting): Promise<Routing> {
  return asked.model === undefined ? asked : { ...asked, ...(await byName(deps, asked.model)) };
}

/**
 * OpenAI's routes, and the name the response reports: a loaded model of that name, or one in the models
 * directories (loaded on first use); any other name goes to the default model while at most one model is
 * loaded (OpenAI clients must send some name, llama-server ignores it), and is refused once several are
 * (see openAiTarget).
 */
export async function openAiRouting(deps: RouteDeps, requested: string | null): Promise<{ routing: Routing; model: string }> {
  if (requested !== null) {
    const to = await byName(deps, requested);
    if (to.load || to.model in deps.supervisor.getSnapshot().context.models) return { routing: to, model: to.model };
  }
  const snapshot = deps.supervisor.getSnapshot();
  const routing = openAiTarget(snapshot, requested);
  return { routing, model: servedModelName(snapshot, routing) };
}

/**
 * Ollama's routes: a model is named, never defaulted; one in the models directories is loaded on first use
 * (with `options.num_ctx`); a name that is nowhere gets Ollama's 404. `keep_alive` is kept.
 */
export async function ollamaRouting(deps: RouteDeps, request: { model: string; keepAliveMs?: number; contextSize?: number }): Promise<Routing> {
  const to = await byName(deps, request.model);
  if (!to.load && to.suggestions) throw ollamaNotFound(deps, request.model, to.suggestions);
  return {
    ...to,
    ...(to.load && request.contextSize !== undefined && { load: { ...to.load, settings: { contextSize: request.contextSize } } }),
    ...(request.keepAliveMs !== undefined && { keepAliveMs: request.keepAliveMs }),
  };
}

/** Ollama's 404 for a model that is neither loaded nor in the models directories: where to put its file. */
export function ollamaNotFound(deps: RouteDeps, requested: string, suggestions: readonly string[]): KekahydeError {
  return new KekahydeError(
    "UNKNOWN_MODEL",
    `model "${requested}" not found: put ${canonicalModelName(requested).replace(/:/, "/")}.gguf in a models directory (${deps.catalogue.dirs.join(", ")})${closeNames(suggestions)}`,
  );
}

/**
 * What POST /load_model loads: the file (its `path`, or the models directories' file of its `name`, else a
 * 404 that says where models are looked for and which names come close), under which name (a name from the
 * models directories is taken as Ollama writes it, "x:latest" is "x"; without a name, the file's), and the
 * draft model's file: a path (with a separator, or ending in .gguf), else a name in the models directories,
 * found the same way. The plan then checks the files (folders, GGUF, vocabulary).
 */
export async function loadTarget(deps: RouteDeps, request: { path?: string; name?: string; settings: LoadSettings }): Promise<{ path: string; name: string; settings: LoadSettings }> {
  const path = request.path ?? (await catalogueFile(deps, request.name!, unknownLoad));
  const draft = request.settings.draftModel;
  const settings = draft === undefined || isPath(draft) ? request.settings : { ...request.settings, draftModel: await catalogueFile(deps, draft, unknownDraft) };
  const name = request.name === undefined ? defaultModelName(path) : request.path === undefined ? canonicalModelName(request.name) : request.name;
  return { path, name, settings };
}

const isPath = (requested: string): boolean => /[\\/]/.test(requested) || /\.gguf$/i.test(requested);

type Unknown = (requested: string, close: string[], dirs: readonly string[]) => KekahydeError;

const unknownLoad: Unknown = (requested, close, dirs) =>
  new KekahydeError(
    "UNKNOWN_MODEL",
    `No model named "${requested}" in the models directories (${dirs.join(", ")})${closeNames(close)}. Put its .gguf file there, or load it with {"path": "/abs/model.gguf"}.`,
    { model: requested, suggestions: close, models_dirs: dirs },
  );

const unknownDraft: Unknown = (requested, close, dirs) =>
  new KekahydeError(
    "UNKNOWN_MODEL",
    `"draft_model": no model named "${requested}" in the models directories (${dirs.join(", ")})${closeNames(close)}. Put the draft's .gguf file there, or give its path, e.g. {"draft_model": "/abs/small.gguf"}.`,
    { field: "draft_model", model: requested, suggestions: close, models_dirs: dirs },
  );

/** The models directories' file of a name, or the refusal `unknown` makes with the names that come close. */
async function catalogueFile(deps: RouteDeps, requested: string, unknown: Unknown): Promise<string> {
  const found = await inCatalogue(deps, canonicalModelName(requested));
  if ("path" in found) return found.path;
  throw unknown(requested, found.close, deps.catalogue.dirs);
}

/**
 * Which model an OpenAI request goes to. Its `model` field is required by OpenAI clients, which often send a
 * fixed name; so a name that is not loaded goes to the default model while at most one model is loaded (as
 * llama-server does), and is refused once several are, where serving another model would be a surprise.
 */
function openAiTarget(snapshot: SupervisorSnapshot, requested: string | null): { model?: string } {
  const loaded = Object.keys(snapshot.context.models);
  if (requested !== null && (loaded.includes(requested) || loaded.length > 1)) return { model: requested };
  return {};
}

/** The name of the model a request with this routing is served by, for the response's `model` field. */
function servedModelName(snapshot: SupervisorSnapshot, target: { model?: string }): string {
  return target.model ?? defaultModel(snapshot.context)?.name ?? "none";
}
