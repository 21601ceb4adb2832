/** The catalogue of models by name: names (names.ts), directory scans (scan.ts), GGUF facts (facts.ts), digests (digest.ts). */
export type { Catalogue, CatalogueEntry, CatalogueOptions,  ModelFacts } from "./types.ts";
export { createCatalogue } from "./catalogue.ts";
export { canonicalModelName, parseModelName,  MAX_REQUESTED_NAME_LENGTH } from "./names.ts";
export { defaultDigestCacheFile, defaultModelsDir } from "./paths.ts";
export { formatParameterCount, templateSupportsTools } from "./facts.ts";
