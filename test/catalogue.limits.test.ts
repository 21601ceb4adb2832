import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { createCatalogue, MAX_REQUESTED_NAME_LENGTH, templateSupportsTools } from "../src/catalogue/index.ts";
import { MAX_TEMPLATE_INSPECTED } from "../src/catalogue/facts.ts";
import { editDistance, rankCloseNames } from "../src/catalogue/names.ts";
import { KekahydeError } from "../src/errors.ts";
import { randomLlamaSpec } from "../src/gguf/randomModel.ts";
import { writeGguf } from "../src/gguf/writer.ts";
import { startTestDaemon, type TestDaemon } from "./helpers/daemon.ts";

// Issue: a 400 KB chat template of `{{` without `}}` froze every route for 23 s whenever the models were
// listed (a lazy regular expression, quadratic on it); a model name of 900,000 characters stalled /health for
// 4.4 s while the daemon looked for close names among 30 models.

/** The rule as regular expressions wrote it before (quadratic on some inputs): the oracle for small templates. */
function templateSupportsToolsByRegex(template: string | null): boolean {
  if (!template) return false;
  const tag = /\{\{([\s\S]*?)\}\}|\{%([\s\S]*?)%\}/g;
  const literal = /"(?:[^"\\]|\\[\s\S])*"|'(?:[^'\\]|\\[\s\S])*'/g;
  for (const m of template.matchAll(tag)) if (/(?<![\w.])tools\b/.test((m[1] ?? m[2]).replace(literal, '""'))) return true;
  return false;
}

/** Milliseconds `work` takes, the best of three (a busy machine can pause any one run). */
function bestOfThree(work: () => void): number {
  let best = Infinity;
  for (let run = 0; run < 3; run++) {
    const started = performance.now();
    work();
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

describe("chat template inspection is linear and bounded", () => {
  const hostile: Record<string, string> = {
    "400,000 characters of {{": "{{".repeat(200_000),
    "400,000 characters of {%": "{%".repeat(200_000),
    "{{ and {% taking turns": "{{{%".repeat(100_000),
    "a tag full of escaped quotes, never closed": `{{ "${'\\"'.repeat(200_000)} }}`,
    "a tag full of escaped apostrophes, never closed": `{% '${"\\'".repeat(200_000)} %}`,
  };
  for (const [what, template] of Object.entries(hostile)) {
    it(`inspects ${what} in well under a second`, () => {
      let answer = true;
      const ms = bestOfThree(() => {
        answer = templateSupportsTools(template);
      });
      assert.equal(answer, false);
      // The regular expressions took ~20 s on the first; a linear pass takes a few milliseconds.
      assert.ok(ms < 500, `${ms.toFixed(0)} ms`);
    });
  }

  it("gives the regular expressions' answers on any template", () => {
    const piece = fc.constantFrom("{", "}", "{{", "}}", "{%", "%}", "{#", "%", '"', "'", "\\", "tools", ".", "_", "x", " ", "\n");
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 30 }), (pieces) => {
        const template = pieces.join("");
        assert.equal(templateSupportsTools(template), templateSupportsToolsByRegex(template), JSON.stringify(template));
      }),
      { numRuns: 5000 },
    );
  });

  it(`looks at the first ${MAX_TEMPLATE_INSPECTED / 1024 / 1024} MiB of a template only`, () => {
    const padding = "x".repeat(MAX_TEMPLATE_INSPECTED);
    assert.equal(templateSupportsTools(`{% if tools %}{% endif %}${padding}`), true);
    assert.equal(templateSupportsTools(`${padding}{% if tools %}{% endif %}`), false);
  });
});

describe("model names are bounded", () => {
  const names = Array.from({ length: 30 }, (_, i) => `model-${i}:q${i % 4}`);

  it("looks for no close names to a name longer than the limit, and works out distances only as far as they matter", () => {
    const huge = "x".repeat(900_000);
    const ms = bestOfThree(() => assert.deepEqual(rankCloseNames(huge, names), []));
    // Before, 30 edit distances of 900,000 x 10 cells: seconds.
    assert.ok(ms < 50, `${ms.toFixed(0)} ms`);
    assert.deepEqual(rankCloseNames("model-1:q1", names).slice(0, 1), ["model-1:q1"]);
    const far = "a".repeat(MAX_REQUESTED_NAME_LENGTH);
    assert.equal(editDistance(far, "b".repeat(MAX_REQUESTED_NAME_LENGTH), 5), 6, "over the bound: the bound plus one");
    assert.equal(editDistance(far, "a", 5), 6, "a length difference over the bound is not worked out");
  });

  it("bounded edit distances agree with the full one", () => {
    const word = fc.string({ unit: fc.constantFrom("a", "b", "c"), maxLength: 12 });
    fc.assert(
      fc.property(word, word, fc.integer({ min: 0, max: 12 }), (a, b, atMost) => {
        assert.equal(editDistance(a, b, atMost), Math.min(editDistance(a, b), atMost + 1));
      }),
      { numRuns: 2000 },
    );
  });

  describe("through the catalogue and HTTP", () => {
    let dir: string;
    let d: TestDaemon;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "kekahyde-names-"));
      const spec = randomLlamaSpec({ name: "n", embeddingLength: 64, blockCount: 1, feedForwardLength: 128, headCount: 2, headCountKv: 1, contextLength: 256, vocabSize: 400 }, "Q8_0");
      for (let i = 0; i < 30; i++) await writeGguf(join(dir, `model-${i}.gguf`), spec);
      d = await startTestDaemon({ modelsDirs: [dir] });
    });
    after(async () => {
      await d?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("the catalogue refuses a name over the limit with a BAD_REQUEST that says the limit", async () => {
      const catalogue = createCatalogue({ dirs: [dir] });
      try {
        const tooLong = "m".repeat(MAX_REQUESTED_NAME_LENGTH + 1);
        for (const lookup of [() => catalogue.find(tooLong), () => catalogue.closeNames(tooLong)]) {
          await assert.rejects(lookup(), (e: unknown) => {
            assert.ok(e instanceof KekahydeError);
            assert.equal(e.code, "BAD_REQUEST");
            assert.match(e.message, /"model" is 351 characters long, but a model name is at most 350 characters/);
            return true;
          });
        }
        assert.equal(await catalogue.find("m".repeat(MAX_REQUESTED_NAME_LENGTH)), null, "a name at the limit is looked up");
        assert.deepEqual(await catalogue.closeNames("model-1"), ["model-1", "model-10", "model-11", "model-12", "model-13"]);
      } finally {
        catalogue.close();
      }
    });

    for (const [route, body] of [
      ["/api/generate", { prompt: "hi" }],
      ["/api/show", {}],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }] }],
      ["/v1/embeddings", { input: "hi" }],
    ] as const) {
      it(`${route} answers a 900,000-character model name with 400 at once, and /health is not held up`, async () => {
        const started = performance.now();
        const asked = d.post(route, { model: "y".repeat(900_000), ...body });
        const health = await d.get("/health");
        const healthMs = performance.now() - started;
        const res = await asked;
        const ms = performance.now() - started;
        const text = await res.text();
        assert.equal(res.status, 400, text);
        assert.match(text, /at most 350 characters/);
        assert.equal(health.status, 200);
        // Before: 4.4 s for both, the name compared with each of the 30 models'.
        assert.ok(ms < 1000 && healthMs < 1000, `answered in ${ms.toFixed(0)} ms, /health in ${healthMs.toFixed(0)} ms`);
      });
    }
  });
});
