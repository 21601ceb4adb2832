import { fileTypeName, guessFileType } from "../gguf/fileTypes.ts";
import type { GgufInfo, GgufMetadataValue } from "../gguf/reader.ts";
import type { ModelFacts } from "./types.ts";

/** What a listing shows about a model, taken from a GGUF header the bounded reader has read and checked. */

const asNumber = (v: GgufMetadataValue | undefined): number | null => (typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : null);

/**
 * `x.toFixed(digits)` rounded the way Go's fmt does: to nearest on the exact binary value, and half to even
 * when that value is exactly half-way (JavaScript rounds those up: 1.25 → "1.3" where Go prints "1.2").
 */
function goFixed(x: number, digits: number): string {
  const rounded = x.toFixed(digits);
  // A double below 2^53 has at most 52 fractional bits, so 60 decimals spell it exactly.
  const exact = x.toFixed(Math.min(100, digits + 60));
  const cut = exact.indexOf(".") + 1 + digits;
  if (!/^50*$/.test(exact.slice(cut))) return rounded;
  const truncated = exact.slice(0, digits === 0 ? cut - 1 : cut);
  return Number(truncated.at(-1)) % 2 === 0 ? truncated : rounded;
}

/**
 * A parameter count as Ollama prints it (format.HumanNumber): billions with one decimal ("7.6B"), millions
 * with two ("494.03M"), thousands with none ("110K"), whole numbers without decimals ("1B", "125M").
 */
export function formatParameterCount(count: number): string {
  const scaled = (unit: number, digits: number, suffix: string) => {
    const n = count / unit;
    return `${n === Math.floor(n) ? n.toFixed(0) : goFixed(n, digits)}${suffix}`;
  };
  if (count >= 1e9) return scaled(1e9, 1, "B");
  if (count >= 1e6) return scaled(1e6, 2, "M");
  if (count >= 1e3) return `${goFixed(count / 1e3, 0)}K`;
  return String(Math.trunc(count));
}

/** Jinja tags: `{{ … }}` and `{% … %}` (comments `{# … #}` are not code). */
const JINJA_TAG = /\{\{([\s\S]*?)\}\}|\{%([\s\S]*?)%\}/g;
const STRING_LITERAL = /"(?:[^"\\]|\\[\s\S])*"|'(?:[^'\\]|\\[\s\S])*'/g;
/** `tools` as a variable of its own, not `custom_tools`, `message.tools` or `x.tools`. */
const TOOLS_VARIABLE = /(?<![\w.])tools\b/;

/**
 * Whether a chat template renders tools: its code (not its text, not a string literal) uses a `tools`
 * variable, the way the templates of Llama 3.1 (`{%- if tools is not none %}`), Qwen 2.5 (`{%- if tools %}`)
 * and Mistral (`{%- for tool in tools %}`) do. Ollama's rule for its own templates is the same: the template
 * refers to `.Tools`.
 */
export function templateSupportsTools(template: string | null): boolean {
  if (!template) return false;
  for (const m of template.matchAll(JINJA_TAG)) {
    const code = (m[1] ?? m[2]).replace(STRING_LITERAL, '""');
    if (TOOLS_VARIABLE.test(code)) return true;
  }
  return false;
}

export function modelFacts(info: GgufInfo): ModelFacts {
  let parameters = 0n;
  for (const t of info.tensors) parameters += t.dims.reduce((a, d) => a * d, 1n);
  const parameterCount = Number(parameters);
  const fileType = asNumber(info.metadata.get("general.file_type"));
  const named = fileType === null ? null : fileTypeName(fileType);
  const guessed = named === null ? guessFileType(info.tensors) : null;
  const template = info.metadata.get("tokenizer.chat_template");
  const chatTemplate = typeof template === "string" ? template : null;
  return {
    architecture: info.architecture,
    name: info.name,
    parameterCount,
    parameterSize: formatParameterCount(parameterCount),
    quantization: named ?? (guessed === null ? "unknown" : (fileTypeName(guessed) ?? "unknown")),
    fileType,
    contextLength: info.contextLength,
    embeddingLength: asNumber(info.metadata.get(`${info.architecture}.embedding_length`)),
    chatTemplate,
    templateSupportsTools: templateSupportsTools(chatTemplate),
    poolingType: asNumber(info.metadata.get(`${info.architecture}.pooling_type`)),
  };
}
