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

/** `tools` as a variable of its own, not `custom_tools`, `message.tools` or `x.tools`. */
const TOOLS_VARIABLE = /(?<![\w.])tools\b/;
/** How much of a chat template is inspected: real ones are a few KiB to a few tens of KiB. */
export const MAX_TEMPLATE_INSPECTED = 1024 * 1024;

const TAG_CLOSERS: ReadonlyMap<string, string> = new Map([
  ["{", "}}"],
  ["%", "%}"],
]);

/**
 * The code inside each Jinja tag, `{{ … }}` and `{% … %}`, in order (comments `{# … #}` are not code); a tag
 * runs from its opener to the first closer after it. One pass over the text: an opener with no closer after
 * it means no later opener of its kind has one, so that kind is not looked for again. (The lazy regular
 * expression this replaces tried every opener against the rest of the text: quadratic, 20 seconds for
 * 400,000 characters of `{{`.)
 */
function jinjaCode(template: string): string[] {
  const code: string[] = [];
  const unclosed = new Set<string>();
  let at = template.indexOf("{");
  while (at !== -1 && unclosed.size < TAG_CLOSERS.size) {
    const kind = template.charAt(at + 1);
    const closer = TAG_CLOSERS.get(kind);
    if (closer !== undefined && !unclosed.has(kind)) {
      const end = template.indexOf(closer, at + 2);
      if (end !== -1) {
        code.push(template.slice(at + 2, end));
        at = template.indexOf("{", end + closer.length);
        continue;
      }
      unclosed.add(kind);
    }
    at = template.indexOf("{", at + 1);
  }
  return code;
}

/** Where the string literal opened at `open` ends (its closing quote; backslash escapes), or -1 when it does not. */
function closingQuote(code: string, open: number): number {
  const quote = code[open];
  for (let i = open + 1; i < code.length; i++) {
    if (code[i] === "\\") i++;
    else if (code[i] === quote) return i;
  }
  return -1;
}

/**
 * `code` with each string literal ("…" or '…') replaced by `""`, in one pass: a quote that is never closed
 * means no later quote of its kind is (each later one is escaped in the first one's text), so that kind is
 * not looked for again.
 */
function withoutStringLiterals(code: string): string {
  let out = "";
  let copied = 0;
  const unclosed = new Set<string>();
  for (let i = 0; i < code.length; i++) {
    const c = code[i];
    if ((c !== '"' && c !== "'") || unclosed.has(c)) continue;
    const end = closingQuote(code, i);
    if (end === -1) {
      unclosed.add(c);
      continue;
    }
    out += `${code.slice(copied, i)}""`;
    copied = end + 1;
    i = end;
  }
  return out + code.slice(copied);
}

/**
 * Whether a chat template renders tools: its code (not its text, not a string literal) uses a `tools`
 * variable, the way the templates of Llama 3.1 (`{%- if tools is not none %}`), Qwen 2.5 (`{%- if tools %}`)
 * and Mistral (`{%- for tool in tools %}`) do. Ollama's rule for its own templates is the same: the template
 * refers to `.Tools`. Linear in the template's length, and only its first MAX_TEMPLATE_INSPECTED characters
 * are looked at, so a crafted template cannot stall a listing.
 */
export function templateSupportsTools(template: string | null): boolean {
  if (!template) return false;
  const inspected = template.length > MAX_TEMPLATE_INSPECTED ? template.slice(0, MAX_TEMPLATE_INSPECTED) : template;
  return jinjaCode(inspected).some((code) => TOOLS_VARIABLE.test(withoutStringLiterals(code)));
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
