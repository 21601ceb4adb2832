import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { OPTIONS, shownDefault } from "../src/config.ts";

/**
 * The README's table of `kekahyde serve` options, written from src/config.ts (the flags, their environment
 * variables, defaults and help): one source, so the README cannot miss an option. `npm run docs:options`
 * rewrites it; test/docs.test.ts fails when the README's table is not this one.
 */

export const OPTIONS_BEGIN = "<!-- options: written by `npm run docs:options` from src/config.ts -->";
export const OPTIONS_END = "<!-- /options -->";

const cell = (text: string) => text.replace(/\|/g, "\\|");

export function optionsTable(): string {
  const rows = OPTIONS.map((o) => {
    const flag = `\`--${o.flag}${o.value ? ` ${o.value}` : ""}\``;
    const def = shownDefault(o);
    const none = o.kind === "flag" ? "off" : "none";
    return `| ${cell(flag)} | \`${o.env}\` | ${def === null ? none : `\`${cell(def)}\``} | ${cell(o.help)} |`;
  });
  return ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

/** The README with its options table replaced by the generated one. */
export function withOptionsTable(readme: string): string {
  const begin = readme.indexOf(OPTIONS_BEGIN);
  const end = readme.indexOf(OPTIONS_END);
  if (begin < 0 || end < begin) throw new Error(`README.md has no ${OPTIONS_BEGIN} … ${OPTIONS_END} section`);
  return `${readme.slice(0, begin + OPTIONS_BEGIN.length)}\n${optionsTable()}\n${readme.slice(end)}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const path = fileURLToPath(new URL("../README.md", import.meta.url));
  writeFileSync(path, withOptionsTable(readFileSync(path, "utf8")));
  console.log("wrote the options table of README.md");
}
