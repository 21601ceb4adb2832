import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, truncate, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  canonicalModelName,
  createCatalogue,
  defaultDigestCacheFile,
  defaultModelsDir,
  formatParameterCount,
  parseModelName,
  templateSupportsTools,
  type Catalogue,
  type CatalogueOptions,
} from "../src/catalogue/index.ts";
import { CHATML_TEMPLATE, TINY_CHAR_MODEL, writeCharModel } from "../src/gguf/charModel.ts";
import { randomLlamaSpec, type LlamaShape } from "../src/gguf/randomModel.ts";
import { GgmlType } from "../src/gguf/format.ts";
import { str, u32, writeGguf, type GgufTensorSpec, type GgufValue } from "../src/gguf/writer.ts";

/** A llama small enough to write in milliseconds (~100 kB). */
const SMALL: LlamaShape = { name: "cat-small", embeddingLength: 64, blockCount: 1, feedForwardLength: 128, headCount: 2, headCountKv: 1, contextLength: 256, vocabSize: 400 };

/** Llama 3.1's template, cut down to the parts that handle tools (they are the same as the original's). */
const LLAMA31_TOOLS_TEMPLATE = `{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{%- if tools_in_user_message and not tools is none %}
    {{- "Given the following functions, please respond with a JSON for a function call.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}`;

const CHATML = CHATML_TEMPLATE;

/** F32 biases of layer 0: with them, a small llama has more 1-D F32 tensors (13) than weight matrices (9). */
const BIASES: GgufTensorSpec[] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_down", "ffn_up", "ffn_norm", "attn_norm", "output"].map((name) => {
  const n = name === "attn_k" || name === "attn_v" ? 32 : name.startsWith("ffn_gate") || name === "ffn_up" ? 128 : 64;
  return { name: `blk.0.${name}.bias`, dims: [n], type: GgmlType.F32, data: () => [new Uint8Array(4 * n)] };
});

/** Writes a small llama; `set` adds or replaces metadata keys, `drop` removes some. Returns the file size. */
async function writeSmall(
  path: string,
  opts: { type?: "F16" | "Q8_0"; set?: Record<string, GgufValue>; drop?: string[]; shape?: Partial<LlamaShape>; seed?: number; biases?: boolean } = {},
): Promise<number> {
  const spec = randomLlamaSpec({ ...SMALL, ...opts.shape }, opts.type ?? "Q8_0", opts.seed ?? 1);
  const set = opts.set ?? {};
  const metadata = spec.metadata.filter(([k]) => !(opts.drop ?? []).includes(k) && !(k in set));
  return writeGguf(path, { ...spec, metadata: [...metadata, ...Object.entries(set)], tensors: [...spec.tensors, ...(opts.biases ? BIASES : [])] });
}

/** The longest the event loop went without running a 2 ms timer while `work` ran. */
async function worstEventLoopGap(work: Promise<unknown>): Promise<number> {
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 2);
  try {
    await work;
  } finally {
    clearInterval(timer);
  }
  return Math.max(worst, performance.now() - last);
}

const sha256sum = (path: string) => `sha256:${execFileSync("sha256sum", [path], { encoding: "utf8" }).split(" ")[0]}`;

describe("model catalogue", () => {
  let root: string;
  let n = 0;
  const open: Catalogue[] = [];
  /** A fresh, empty folder under the test's temporary root. */
  const freshDir = async (name = "d") => {
    const dir = join(root, `${name}-${n++}`);
    await mkdir(dir, { recursive: true });
    return dir;
  };
  const catalogue = (options: CatalogueOptions) => {
    const c = createCatalogue(options);
    open.push(c);
    return c;
  };
  let tinyPath: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "kekahyde-catalogue-"));
    tinyPath = join(root, "tiny-source.gguf");
    await writeCharModel(tinyPath, TINY_CHAR_MODEL);
  });
  after(async () => {
    for (const c of open) c.close();
    await rm(root, { recursive: true, force: true });
  });

  it("names files after themselves, and one sub-folder level as name:tag", async () => {
    const dir = await freshDir();
    await writeSmall(join(dir, "qwen2.5-7b-q4_k_m.gguf"));
    await writeSmall(join(dir, "Mixed-Case.GGUF"));
    await mkdir(join(dir, "llama3"));
    await writeSmall(join(dir, "llama3", "8b-q4_k_m.gguf"));
    await writeSmall(join(dir, "llama3", "latest.gguf"), { seed: 2 });
    const c = catalogue({ dirs: [dir] });

    const entries = await c.list();
    assert.deepEqual(
      entries.map((e) => e.name),
      ["Mixed-Case", "llama3", "llama3:8b-q4_k_m", "qwen2.5-7b-q4_k_m"],
      "sorted by name, the file's case kept, latest.gguf is the bare family name",
    );
    const latest = entries.find((e) => e.name === "llama3")!;
    assert.equal(latest.path, join(dir, "llama3", "latest.gguf"));
    assert.equal(latest.dir, dir);

    assert.equal((await c.find("llama3"))?.path, latest.path);
    assert.equal((await c.find("llama3:latest"))?.path, latest.path, ":latest is the bare name");
    assert.equal((await c.find("llama3:8b-q4_k_m"))?.path, join(dir, "llama3", "8b-q4_k_m.gguf"));
    assert.equal((await c.find("qwen2.5-7b-q4_k_m:latest"))?.name, "qwen2.5-7b-q4_k_m");
    assert.equal(await c.find("LLAMA3"), null, "names are case-sensitive");
    assert.equal(await c.find("mixed-case"), null);
    assert.equal(await c.find("llama3:70b"), null);
  });

  it("parses and canonicalises name:tag as Ollama does", () => {
    assert.deepEqual(parseModelName("x"), { base: "x", tag: "latest" });
    assert.deepEqual(parseModelName("x:latest"), { base: "x", tag: "latest" });
    assert.deepEqual(parseModelName("llama3:8b-q4_k_m"), { base: "llama3", tag: "8b-q4_k_m" });
    assert.deepEqual(parseModelName("host:5000/ns/x"), { base: "host:5000/ns/x", tag: "latest" }, "a port is not a tag");
    assert.equal(canonicalModelName("x:latest"), "x");
    assert.equal(canonicalModelName("x"), "x");
    assert.equal(canonicalModelName("x:7b"), "x:7b");
    assert.equal(canonicalModelName("x:Latest"), "x:Latest", "tags are case-sensitive too");
  });

  it("ignores hidden, non-GGUF and deeper files, skips unusable names with one warning, and treats a missing directory as empty", async () => {
    const dir = await freshDir();
    await writeSmall(join(dir, "good.gguf"));
    await writeSmall(join(dir, ".hidden.gguf"));
    await writeFile(join(dir, "notes.txt"), "not a model");
    await writeFile(join(dir, "model.bin"), "not a model");
    await mkdir(join(dir, ".cache"));
    await writeSmall(join(dir, ".cache", "x.gguf"));
    await mkdir(join(dir, "fam", "deeper"), { recursive: true });
    await writeSmall(join(dir, "fam", "deeper", "too-deep.gguf"));
    await writeSmall(join(dir, "fam", ".partial.gguf"));
    await writeSmall(join(dir, "has space.gguf"));
    await writeSmall(join(dir, `${"x".repeat(129)}.gguf`));
    await writeSmall(join(dir, "two:colons:here.gguf"));
    const warnings: Array<Record<string, unknown>> = [];
    const c = catalogue({ dirs: [join(root, "does-not-exist"), dir], onWarning: (_m, d) => void warnings.push(d) });

    assert.deepEqual((await c.list()).map((e) => e.name), ["good"]);
    await c.list();
    assert.deepEqual(
      warnings.map((w) => w.file).sort(),
      [join(dir, "has space.gguf"), join(dir, "two:colons:here.gguf"), join(dir, `${"x".repeat(129)}.gguf`)].sort(),
      "one warning per unusable name, however often the directory is listed",
    );
  });

  it("settles name clashes: the first directory wins, then the top-level file, with one warning naming both", async () => {
    const first = await freshDir("first");
    const second = await freshDir("second");
    await writeSmall(join(first, "x.gguf"));
    await writeSmall(join(second, "x.gguf"), { seed: 2 });
    await writeSmall(join(second, "only-second.gguf"));
    await writeSmall(join(first, "y.gguf"));
    await mkdir(join(first, "y"));
    await writeSmall(join(first, "y", "latest.gguf"), { seed: 3 });
    const warnings: Array<{ message: string; details: Record<string, unknown> }> = [];
    const c = catalogue({ dirs: [first, second], onWarning: (message, details) => void warnings.push({ message, details }) });

    const entries = await c.list();
    await c.list();
    assert.deepEqual(entries.map((e) => e.name), ["only-second", "x", "y"]);
    assert.equal(entries.find((e) => e.name === "x")!.path, join(first, "x.gguf"));
    assert.equal(entries.find((e) => e.name === "only-second")!.dir, second);
    assert.equal(entries.find((e) => e.name === "y")!.path, join(first, "y.gguf"), "the top-level file wins over family/latest.gguf");
    assert.deepEqual(
      warnings.map((w) => w.details).sort((a, b) => String(a.name).localeCompare(String(b.name))),
      [
        { name: "x", kept: join(first, "x.gguf"), ignored: join(second, "x.gguf") },
        { name: "y", kept: join(first, "y.gguf"), ignored: join(first, "y", "latest.gguf") },
      ],
      "once per clash, with both paths",
    );
    assert.match(warnings[0].message, /rename/);
  });

  it("sees a file added, changed or removed while it runs, on the next list() and find()", async () => {
    const dir = await freshDir();
    await writeSmall(join(dir, "a.gguf"));
    const c = catalogue({ dirs: [dir] });
    assert.deepEqual((await c.list()).map((e) => e.name), ["a"]);
    assert.equal(await c.find("b"), null);

    await writeSmall(join(dir, "b.gguf"));
    assert.equal((await c.find("b"))?.path, join(dir, "b.gguf"), "found without a restart or a rescan call");
    assert.deepEqual((await c.list()).map((e) => e.name), ["a", "b"]);
    await c.digestsSettled();
    const before = (await c.list()).find((e) => e.name === "b")!;
    assert.equal(before.facts?.quantization, "Q8_0");
    assert.equal(before.digest, sha256sum(join(dir, "b.gguf")));

    // The same name, new contents: another size and mtime.
    await writeSmall(join(dir, "b.gguf"), { type: "F16", shape: { contextLength: 512 } });
    const changed = (await c.find("b"))!;
    assert.equal(changed.facts?.quantization, "F16", "facts are read again");
    assert.equal(changed.facts?.contextLength, 512);
    assert.equal(changed.digest, null, "the old digest is not shown for the new contents");
    await c.digestsSettled();
    const rehashed = (await c.find("b"))!;
    assert.equal(rehashed.digest, sha256sum(join(dir, "b.gguf")));
    assert.notEqual(rehashed.digest, before.digest);

    // Same size, new mtime only (e.g. rewritten in place): the version changes, so the facts are read again.
    const bytes = await readFile(join(dir, "b.gguf"));
    await writeFile(join(dir, "b.gguf"), Buffer.concat([bytes.subarray(0, 4), Buffer.from("XXXX"), bytes.subarray(8)]));
    await utimes(join(dir, "b.gguf"), new Date(), new Date(Date.now() + 5000));
    const broken = (await c.find("b"))!;
    assert.equal(broken.facts, null);
    assert.match(broken.problem ?? "", /version/);

    await rm(join(dir, "a.gguf"));
    assert.deepEqual((await c.list()).map((e) => e.name), ["b"]);
  });

  it("reads the facts a listing shows: family, parameters, quantization, context, template", async () => {
    const dir = await freshDir();
    await copyFile(tinyPath, join(dir, "tiny.gguf"));
    await writeSmall(join(dir, "q8.gguf"), { type: "Q8_0", set: { "tokenizer.chat_template": str(LLAMA31_TOOLS_TEMPLATE) } });
    await writeSmall(join(dir, "guessed.gguf"), { type: "Q8_0", drop: ["general.file_type"], biases: true });
    await writeSmall(join(dir, "bf16.gguf"), { type: "F16", set: { "general.file_type": u32(32) } });
    const c = catalogue({ dirs: [dir] });
    const byName = new Map((await c.list()).map((e) => [e.name, e]));

    const tiny = byName.get("tiny")!.facts!;
    const { embeddingLength: e, blockCount: L, feedForwardLength: ff, headCount, headCountKv } = TINY_CHAR_MODEL;
    const vocab = 356; // <unk> <s> </s> <|im_start|> <|im_end|>, 256 bytes, the space piece, 94 printable characters
    const kv = (e / headCount) * headCountKv;
    const expected = 2 * e * vocab + e + L * (2 * e + 2 * e * e + 2 * e * kv + 3 * e * ff);
    assert.equal(tiny.parameterCount, expected, "the sum of every tensor's element count");
    assert.equal(tiny.parameterSize, formatParameterCount(expected));
    assert.equal(tiny.architecture, "llama");
    assert.equal(tiny.name, "kekahyde-char-tiny");
    assert.equal(tiny.quantization, "F16");
    assert.equal(tiny.fileType, 1);
    assert.equal(tiny.contextLength, 4096);
    assert.equal(tiny.embeddingLength, 384);
    assert.equal(tiny.chatTemplate, CHATML);
    assert.equal(tiny.templateSupportsTools, false, "ChatML renders no tools");

    const q8 = byName.get("q8")!.facts!;
    assert.equal(q8.quantization, "Q8_0");
    assert.equal(q8.fileType, 7);
    assert.equal(q8.contextLength, 256);
    assert.equal(q8.templateSupportsTools, true, "Llama 3.1's template renders tools");

    const guessed = byName.get("guessed")!.facts!;
    assert.equal(guessed.fileType, null);
    assert.equal(guessed.quantization, "Q8_0", "guessed from the weight matrices, though most tensors of this file are F32 norms and biases");
    assert.equal(guessed.chatTemplate, null);
    assert.equal(guessed.templateSupportsTools, false);

    assert.equal(byName.get("bf16")!.facts!.quantization, "BF16", "general.file_type says BF16, so BF16 it is");
    const listed = byName.get("q8")!;
    assert.equal(listed.size, (await stat(join(dir, "q8.gguf"))).size);
    assert.ok(listed.modifiedAt instanceof Date && Math.abs(listed.modifiedAt.getTime() - Date.now()) < 60_000);
  });

  it("reads the facts of a model file outside its directories (loaded by path), and null for what it cannot read", async () => {
    const c = catalogue({ dirs: [await freshDir()] });
    const facts = await c.factsOf(tinyPath);
    assert.equal(facts?.architecture, "llama");
    assert.equal(facts?.chatTemplate, CHATML_TEMPLATE);
    assert.equal(await c.factsOf(join(root, "missing.gguf")), null);
    assert.equal(await c.factsOf(root), null, "a folder is no model file");
    const junk = join(root, "junk.gguf");
    await writeFile(junk, "not a gguf file");
    assert.equal(await c.factsOf(junk), null);
  });

  it("recognises templates that render tools, not those that only mention them", () => {
    assert.equal(templateSupportsTools(LLAMA31_TOOLS_TEMPLATE), true);
    assert.equal(templateSupportsTools("{%- if tools %}{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}{%- endif %}"), true, "Qwen 2.5");
    assert.equal(templateSupportsTools(CHATML), false);
    assert.equal(templateSupportsTools(null), false);
    assert.equal(templateSupportsTools("You may use tools. {{ message['tools'] }}{# tools #}{{ message.tools }}{{ custom_tools }}"), false, "text, string literals, comments, attributes");
  });

  it("computes each digest once in the background: sha256 of the file, never awaited by list()", async () => {
    const dir = await freshDir();
    await writeSmall(join(dir, "m.gguf"));
    await copyFile(tinyPath, join(dir, "tiny.gguf")); // 4.8 MiB: several chunks and a partial one
    await writeFile(join(dir, "junk.gguf"), "this is not a GGUF file at all");
    const c = catalogue({ dirs: [dir] });
    const first = await c.list();
    assert.deepEqual(first.map((e) => e.digest), [null, null, null], "list() does not wait for digests");
    await c.digestsSettled();
    const listed = await c.list();
    assert.equal(listed.find((e) => e.name === "m")!.digest, sha256sum(join(dir, "m.gguf")));
    assert.equal(listed.find((e) => e.name === "tiny")!.digest, sha256sum(join(dir, "tiny.gguf")));

    const junk = (await c.list()).find((e) => e.name === "junk")!;
    assert.equal(junk.facts, null, "a file the reader refuses is listed");
    assert.match(junk.problem ?? "", /not a GGUF file/);
    assert.equal(junk.digest, null, "and not hashed");
  });

  it("keeps digests across restarts in a cache file, and survives a corrupt one", async () => {
    const dir = await freshDir();
    await writeSmall(join(dir, "m.gguf"));
    const cacheFile = join(await freshDir("cache"), "sub", "digests.json");
    const c1 = catalogue({ dirs: [dir], digestCacheFile: cacheFile });
    await c1.list();
    await c1.digestsSettled();
    c1.close();
    const digest = sha256sum(join(dir, "m.gguf"));

    const c2 = catalogue({ dirs: [dir], digestCacheFile: cacheFile });
    assert.equal((await c2.list())[0].digest, digest, "known on the first listing after a restart, without hashing again");
    c2.close();

    await writeFile(cacheFile, "{ not json");
    const warnings: string[] = [];
    const c3 = catalogue({ dirs: [dir], digestCacheFile: cacheFile, onWarning: (m) => void warnings.push(m) });
    assert.equal((await c3.list())[0].digest, null);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /corrupt/);
    await c3.digestsSettled();
    assert.equal((await c3.list())[0].digest, digest);
    assert.match(await readFile(cacheFile, "utf8"), new RegExp(digest.slice("sha256:".length)), "rewritten");

    // A cached digest is only trusted for the same size and mtime.
    await utimes(join(dir, "m.gguf"), new Date(), new Date(Date.now() + 10_000));
    const c4 = catalogue({ dirs: [dir], digestCacheFile: cacheFile });
    assert.equal((await c4.list())[0].digest, null);
  });

  it("hashes a large file in the background without stalling the event loop", async (t) => {
    const dir = await freshDir();
    const path = join(dir, "big.gguf");
    await writeSmall(path);
    await truncate(path, 256 * 1024 * 1024); // the model, then zeros its header does not mention: still a readable GGUF
    const c = catalogue({ dirs: [dir] });
    const [entry] = await c.list();
    assert.notEqual(entry.facts, null);
    assert.equal(entry.digest, null);
    assert.equal((await c.list())[0].digest, null, "list() answers while the digest is being computed");

    // Hashing 256 MiB in one go would hold the loop for ~250 ms or more; chunked, each step takes about a
    // millisecond. A loaded machine pauses processes now and then, so a slow try is repeated (the file touched
    // so that it is hashed again): a real stall shows on every try.
    const tries: number[] = [];
    for (let attempt = 0; attempt < 3 && !(tries.at(-1)! < 100); attempt++) {
      if (attempt > 0) {
        await utimes(path, new Date(), new Date(Date.now() + attempt * 10_000));
        assert.equal((await c.list())[0].digest, null);
      }
      tries.push(await worstEventLoopGap(c.digestsSettled()));
    }
    t.diagnostic(`worst event-loop gap per try: ${tries.map((x) => x.toFixed(1)).join(", ")} ms`);
    assert.ok(Math.min(...tries) < 100, `the event loop waited ${tries.map((t) => t.toFixed(0)).join(", ")} ms at worst while 256 MiB were hashed`);
    assert.match((await c.list())[0].digest ?? "", /^sha256:[0-9a-f]{64}$/, "(its value is checked on a multi-chunk file above)");
  });

  it("lists a link to a model inside its directory by its real path, and not one that leads outside", async () => {
    const dir = await freshDir();
    const outside = await freshDir("outside");
    await writeSmall(join(dir, "real.gguf"));
    await writeSmall(join(outside, "elsewhere.gguf"));
    await symlink(join(dir, "real.gguf"), join(dir, "alias.gguf"));
    await symlink(join(outside, "elsewhere.gguf"), join(dir, "escape.gguf"));
    const warnings: Array<Record<string, unknown>> = [];
    const c = catalogue({ dirs: [dir], onWarning: (_m, d) => void warnings.push(d) });
    const entries = await c.list();
    assert.deepEqual(entries.map((e) => [e.name, e.path]), [["alias", join(dir, "real.gguf")], ["real", join(dir, "real.gguf")]]);
    assert.deepEqual(warnings, [{ file: join(dir, "escape.gguf"), target: join(outside, "elsewhere.gguf"), dir }]);
  });

  it("suggests close names for a typo", async () => {
    const dir = await freshDir();
    for (const name of ["tiny", "tiny-q8", "llama3", "qwen2.5-7b"]) await writeSmall(join(dir, `${name}.gguf`));
    await mkdir(join(dir, "mistral"));
    await writeSmall(join(dir, "mistral", "7b.gguf"));
    const c = catalogue({ dirs: [dir] });
    assert.equal((await c.closeNames("tinyy"))[0], "tiny");
    assert.deepEqual(await c.closeNames("tinyy"), ["tiny"], "tiny-q8 is 3 edits away: too far for a 5-letter name");
    assert.deepEqual(await c.closeNames("tiny-q9"), ["tiny-q8"], "tiny is 3 edits away from tiny-q9");
    assert.deepEqual(await c.closeNames("tin"), ["tiny", "tiny-q8"], "names that start with what was asked come first");
    assert.deepEqual(await c.closeNames("mistral"), ["mistral:7b"], "a family suggests its tags");
    assert.deepEqual(await c.closeNames("lama3"), ["llama3"]);
    assert.deepEqual(await c.closeNames("something-else"), [], "nothing far off");
    assert.equal((await c.closeNames("t", 1)).length, 1);
  });

  it("formats parameter counts as Ollama does (format.HumanNumber and its test cases)", () => {
    const cases: Array<[number, string]> = [
      [0, "0"], [999, "999"], [1000, "1K"], [1001, "1K"], [1_000_000, "1M"], [125_000_000, "125M"],
      [500_500_000, "500.50M"], [500_550_000, "500.55M"], [1_000_000_000, "1B"], [2_800_000_000, "2.8B"],
      [2_850_000_000, "2.9B"], [1_000_000_000_000, "1000B"],
      // Real models: TinyLlama, Qwen2.5 7B and 0.5B, and a 110M llama.
      [1_100_048_384, "1.1B"], [7_615_616_512, "7.6B"], [494_032_768, "494.03M"], [110_600_000, "110.60M"],
      // Go's fmt rounds exact halves to even, where JavaScript's toFixed rounds them up.
      [1_250_000_000, "1.2B"], [2_500, "2K"], [3_500, "4K"],
    ];
    for (const [count, text] of cases) assert.equal(formatParameterCount(count), text, String(count));
  });

  it("puts the default models directory and digest cache where XDG says", () => {
    assert.equal(defaultModelsDir({ XDG_DATA_HOME: "/data", HOME: "/home/u" }), "/data/kekahyde/models");
    assert.equal(defaultModelsDir({ HOME: "/home/u" }), "/home/u/.local/share/kekahyde/models");
    assert.equal(defaultModelsDir({ XDG_DATA_HOME: "relative", HOME: "/home/u" }), "/home/u/.local/share/kekahyde/models", "relative XDG paths are ignored");
    assert.equal(defaultDigestCacheFile({ XDG_CACHE_HOME: "/c", HOME: "/home/u" }), "/c/kekahyde/digests.json");
    assert.equal(defaultDigestCacheFile({ HOME: "/home/u" }), "/home/u/.cache/kekahyde/digests.json");
  });
});
