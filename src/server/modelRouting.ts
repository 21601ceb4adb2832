import { canonicalModelName } from "../catalogue/index.ts";
import { KekahydeError } from "../errors.ts";
import type { RouteDeps } from "./runtime.ts";
import type { Routing } from "./validation.ts";

/**
 * Where a request that names a model goes: a loaded model by that name; else the models directories'
 * file of that name, which the supervisor loads first (the request waits for it); else nowhere, with the
 * names that come close (the supervisor refuses it with them). Names are taken as Ollama writes them
 * ("x" = "x:latest").
 */
export async function routeByName(deps: RouteDeps, requested: string): Promise<Pick<Routing, "model" | "load" | "suggestions">> {
  const { models } = deps.supervisor.getSnapshot().context;
  if (requested in models) return { model: requested };
  const name = canonicalModelName(requested);
  if (name in models) return { model: name };
  const entry = await deps.catalogue.find(name);
  if (entry) return { model: name, load: { path: entry.path } };
  return { model: name, suggestions: await deps.catalogue.closeNames(name) };
}

/** The file a load by name means, or a 404 that says where models are looked for and which names come close. */
export async function catalogueFile(deps: RouteDeps, requested: string): Promise<string> {
  const entry = await deps.catalogue.find(canonicalModelName(requested));
  if (entry) return entry.path;
  const close = await deps.catalogue.closeNames(canonicalModelName(requested));
  throw new KekahydeError(
    "UNKNOWN_MODEL",
    `No model named "${requested}" in the models directories (${deps.catalogue.dirs.join(", ")})${close.length ? `; close names: ${close.join(", ")}` : ""}. Put its .gguf file there, or load it with {"path": "/abs/model.gguf"}.`,
    { model: requested, suggestions: close, models_dirs: deps.catalogue.dirs },
  );
}
