import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { optionsTable, withOptionsTable } from "../scripts/options-table.ts";
import { OPTIONS, serveHelp } from "../src/config.ts";

const README = readFileSync(new URL("../README.md", import.meta.url), "utf8");

describe("the docs are the code's", () => {
  it("the README's options table is the one written from src/config.ts (npm run docs:options)", () => {
    assert.equal(README, withOptionsTable(README), "README.md's options table is stale: run npm run docs:options");
    for (const o of OPTIONS) assert.ok(optionsTable().includes(`--${o.flag}`), o.flag);
  });

  it("--help shows every default as people write it", () => {
    const help = serveHelp();
    assert.doesNotMatch(help, /\[object Object\]/);
    assert.match(help, /--keep-alive DURATION .*\[default: 5m\]/);
    assert.match(help, /--max-memory .*\[default: 90%\]/);
    assert.match(help, /--max-body SIZE .*\[default: 1MiB\]/);
  });
});
