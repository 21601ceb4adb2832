import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { CRASH_CLASSES } from "../testing/gguf/craftedModels.ts";
import { GgmlType, GgufValueType } from "../src/gguf/format.ts";
import { checkHyperparameters, checkModel, checkTensorTypes, checkVocabulary } from "../src/gguf/modelChecks.ts";
import { GgufFormatError, readGgufInfo, type GgufInfo, type GgufMetadataValue } from "../src/gguf/reader.ts";
import { fixtureFile, tinyModel } from "../testing/fixtures.ts";

// The crafted files of issue 13 (testing/gguf/craftedModels.ts): each "refused" class killed llama.cpp natively
// (or was refused by it) before the bounded check learnt to refuse it; "loads" classes are odd but valid.
// What the engine does with each raw file: `npx tsx scripts/probe-crafted.ts`.

function refusedWith(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof GgufFormatError, `a GgufFormatError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  };
}

/** A copy of `info` with metadata keys set (or removed with undefined). */
function withMeta(info: GgufInfo, changes: Record<string, GgufMetadataValue | undefined>, arrayTypes: Record<string, GgufValueType> = {}): GgufInfo {
  const metadata = new Map(info.metadata);
  const arrayItemTypes = new Map(info.arrayItemTypes);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) metadata.delete(k);
    else metadata.set(k, v);
    if (Array.isArray(v)) arrayItemTypes.set(k, arrayTypes[k] ?? (typeof v[0] === "number" ? GgufValueType.UINT32 : GgufValueType.STRING));
  }
  return { ...info, metadata, arrayItemTypes };
}

function withTensor(info: GgufInfo, name: string, type: GgmlType, dims = [384n]): GgufInfo {
  return { ...info, tensors: [...info.tensors, { name, type, dims, offset: 0n, size: 0n }] };
}

describe("crafted model files", () => {
  let dir: string;
  const paths = new Map<string, string>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kekahyde-crafted-test-"));
    for (const c of CRASH_CLASSES) {
      const path = join(dir, `${c.name}.gguf`);
      await c.write(path);
      paths.set(c.name, path);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("cover every crash class of issue 13 and some valid oddities", () => {
    const names = CRASH_CLASSES.map((c) => c.name);
    assert.equal(new Set(names).size, names.length, "names are unique");
    for (const n of ["attn_q-i32", "attn_q-i8", "attn_q-i64", "attn_q-f64", "output-i32", "token_embd-i32", "attn_norm-q8_0", "alignment-1-unaligned",
      "head-count-0", "head-count-kv-0", "feed-forward-length-0", "tokenizer-none", "expert-used-over-count", "rms-epsilon-nan", "rms-epsilon-negative",
      "vocab-all-same", "vocab-empty", "chat-template-loop-2m", "chat-template-loop-300m"]) {
      assert.ok(names.includes(n), n);
    }
    for (const e of ["refused", "crashes-engine", "loads"] as const) assert.ok(CRASH_CLASSES.some((c) => c.expected === e), e);
  });

  for (const c of CRASH_CLASSES) {
    if (c.expected === "refused") {
      it(`refuses ${c.name} (${c.description}), naming what is wrong`, async () => {
        await assert.rejects(readGgufInfo(paths.get(c.name)!), (e) => {
          refusedWith(c.mentions ?? /./)(e);
          return refusedWith(/damaged or was crafted|no vocabulary/)(e);
        });
      });
    } else {
      it(`passes ${c.name} (${c.description}): ${c.expected === "loads" ? "it loads" : "only the engine's process boundary can catch it"}`, async () => {
        const info = await readGgufInfo(paths.get(c.name)!);
        assert.equal(info.architecture, "llama");
      });
    }
  }

  it("a check can be switched off, to study what the engine does with the raw file", async () => {
    const info = await readGgufInfo(paths.get("head-count-0")!, { checkModel: false });
    assert.equal(info.metadata.get("llama.attention.head_count"), 0);
  });
});

describe("model checks, rule by rule", () => {
  let valid: GgufInfo;
  before(async () => {
    valid = await readGgufInfo(await tinyModel());
  });

  it("the valid tiny char model passes every check", () => {
    checkModel(valid);
    assert.equal(valid.alignment, 32);
  });

  it("tensor types by role", () => {
    const refuses = (name: string, type: GgmlType, dims?: bigint[]) => assert.throws(() => checkTensorTypes(withTensor(valid, name, type, dims)), refusedWith(new RegExp(name.replace(/\./g, "\\."))));
    const passes = (name: string, type: GgmlType, dims?: bigint[]) => checkTensorTypes(withTensor(valid, name, type, dims));
    for (const t of [GgmlType.I8, GgmlType.I16, GgmlType.I32, GgmlType.I64, GgmlType.F64, GgmlType.Q8_1, GgmlType.Q8_K]) {
      refuses("blk.3.ffn_up_exps.weight", t, [384n, 256n, 4n]);
      refuses("blk.0.attn_qkv.weight", t, [384n, 640n]);
    }
    for (const t of [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q4_K, GgmlType.IQ4_XS, GgmlType.MXFP4, GgmlType.TQ2_0]) passes("blk.0.attn_qkv.weight", t, [384n, 640n]);
    refuses("blk.0.attn_q.bias", GgmlType.F16);
    refuses("blk.0.attn_k_norm.weight", GgmlType.BF16);
    passes("blk.0.attn_q.bias", GgmlType.F32);
    // Integer tensors have legitimate roles (EAGLE-3's d2t map is I64); only known roles are judged.
    passes("d2t", GgmlType.I64);
  });

  it("zero widths in dense transformers, per layer too; recurrent architectures may write zeros", () => {
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.attention.head_count": [6, 0] })), refusedWith(/llama\.attention\.head_count is 0 \(layer 1 of \[6, 0\]\)/));
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.feed_forward_length": 0 })), refusedWith(/llama\.feed_forward_length is 0/));
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.attention.head_count_kv": -1 })), refusedWith(/head_count_kv is -1/));
    const mamba = withMeta({ ...valid, architecture: "mamba" }, { "mamba.attention.head_count": 0, "mamba.feed_forward_length": 0, "mamba.block_count": 2 });
    checkHyperparameters(mamba);
    const jamba = withMeta({ ...valid, architecture: "jamba" }, { "jamba.attention.head_count_kv": [0, 8], "jamba.block_count": 2 });
    checkHyperparameters(jamba);
  });

  it("layer limits", () => {
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.block_count": 513 })), refusedWith(/block_count is 513/));
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.block_count": 0 })), refusedWith(/block_count is 0/));
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.nextn_predict_layers": 3 })), refusedWith(/nextn_predict_layers is 3/));
    checkHyperparameters(withMeta(valid, { "llama.nextn_predict_layers": 1 }));
  });

  it("expert counts, as llama.cpp asserts them", () => {
    const experts = (m: Record<string, GgufMetadataValue | undefined>) => () => checkHyperparameters(withMeta(valid, m));
    assert.throws(experts({ "llama.expert_count": 8, "llama.expert_used_count": 9 }), refusedWith(/expert_used_count is 9, more than the 8 experts/));
    assert.throws(experts({ "llama.expert_count": 8, "llama.expert_used_count": [2, 9] }), refusedWith(/expert_used_count is 9/));
    assert.throws(experts({ "llama.expert_used_count": 2 }), refusedWith(/model has no experts/));
    assert.throws(experts({ "llama.expert_count": 8 }), refusedWith(/must use at least one/));
    assert.throws(experts({ "llama.expert_count": 2000, "llama.expert_used_count": 2 }), refusedWith(/limit of 1024/));
    assert.throws(experts({ "llama.expert_count": 8, "llama.expert_used_count": 2, "llama.expert_group_count": 3, "llama.expert_group_used_count": 1 }), refusedWith(/not a multiple/));
    assert.throws(experts({ "llama.expert_count": 8, "llama.expert_used_count": 2, "llama.expert_group_count": 4, "llama.expert_group_used_count": 4 }), refusedWith(/expert_group_used_count is 4/));
    assert.throws(experts({ "llama.expert_group_count": 2 }), refusedWith(/without experts/));
    experts({ "llama.expert_count": 8, "llama.expert_used_count": 2 })();
    experts({ "llama.expert_count": 8, "llama.expert_used_count": 2, "llama.expert_group_count": 4, "llama.expert_group_used_count": 2 })();
    // llama.cpp turns a Hunyuan dense model's single expert into none, and its used count into 0.
    checkHyperparameters(withMeta({ ...valid, architecture: "hunyuan-dense" }, { "hunyuan-dense.block_count": 2, "hunyuan-dense.expert_count": 1, "hunyuan-dense.expert_used_count": 2 }));
    assert.throws(() => checkHyperparameters(withMeta({ ...valid, architecture: "hunyuan-moe" }, { "hunyuan-moe.block_count": 2, "hunyuan-moe.expert_count": 1, "hunyuan-moe.expert_used_count": 2 })), refusedWith(/expert_used_count is 2/));
  });

  it("norm epsilons and rope scaling", () => {
    for (const eps of [NaN, -1e-6, Infinity, -Infinity]) {
      assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.attention.layer_norm_rms_epsilon": eps })), refusedWith(/layer_norm_rms_epsilon is/));
      assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.attention.layer_norm_epsilon": eps })), refusedWith(/llama\.attention\.layer_norm_epsilon is/));
    }
    checkHyperparameters(withMeta(valid, { "llama.attention.layer_norm_rms_epsilon": 0 }));
    assert.throws(() => checkHyperparameters(withMeta(valid, { "llama.rope.scaling.type": "YaRN" })), refusedWith(/rope\.scaling\.type is "YaRN"/));
    for (const t of ["none", "linear", "yarn", "longrope"]) checkHyperparameters(withMeta(valid, { "llama.rope.scaling.type": t }));
  });

  it("tokenizer models", () => {
    for (const m of ["none", "no_vocab"]) assert.throws(() => checkVocabulary(withMeta(valid, { "tokenizer.ggml.model": m })), refusedWith(/tokenizer\.ggml\.model is "\w+": the model has no vocabulary/));
    assert.throws(() => checkVocabulary(withMeta(valid, { "tokenizer.ggml.model": "spm" })), refusedWith(/"spm", not a tokenizer llama\.cpp knows/));
    assert.throws(() => checkVocabulary(withMeta(valid, { "tokenizer.ggml.model": undefined })), refusedWith(/lacks tokenizer\.ggml\.model/));
    assert.throws(() => checkVocabulary(withMeta(valid, { "tokenizer.ggml.tokens": [] }, { "tokenizer.ggml.tokens": GgufValueType.INT32 })), refusedWith(/lacks tokenizer\.ggml\.tokens/));
    for (const m of ["gpt2", "bert", "t5", "rwkv"]) checkVocabulary(withMeta(valid, { "tokenizer.ggml.model": m }));
  });

  it("vocabularies: duplicates refused (empty pieces as llama.cpp renames them), empty pieces allowed", () => {
    const vocab = (tokens: string[]) => () => checkVocabulary(withMeta(valid, { "tokenizer.ggml.tokens": tokens }));
    assert.throws(vocab(["a", "b", "a"]), refusedWith(/holds "a" twice, at ids 0 and 2/));
    assert.throws(vocab(["a", "", "[EMPTY_1]"]), refusedWith(/an empty piece at id 1, which llama\.cpp renames "\[EMPTY_1\]", and "\[EMPTY_1\]" itself at id 2/));
    assert.throws(vocab([]), refusedWith(/empty list/));
    vocab(["a", "", "", "[EMPTY_0]"])();
    // llama.cpp reads each piece as a C string: a NUL ends it.
    assert.throws(vocab(["a", "b", "a\0b"]), refusedWith(/holds "a" twice, at ids 0 and 2/));
    assert.throws(vocab(["\0", "[EMPTY_0]"]), refusedWith(/an empty piece at id 0/));
    vocab(["\0", "\0x", "x"])();
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ maxLength: 6 }), { minLength: 1, maxLength: 60 }), fc.nat(), fc.nat(), (pieces, i, j) => {
        const tokens = pieces.filter((p) => p !== "" && !p.startsWith("[EMPTY_"));
        if (tokens.length === 0) return;
        vocab(tokens)(); // distinct pieces pass
        const at = j % (tokens.length + 1);
        const dup = tokens[i % tokens.length];
        const withDup = [...tokens.slice(0, at), dup, ...tokens.slice(at)];
        assert.throws(vocab(withDup), refusedWith(new RegExp(`holds ${JSON.stringify(dup).replace(/[\\^$.*+?()[\]{}|]/g, "\\$&")} twice`)));
      }),
      { numRuns: 200 },
    );
  });

  it("compares pieces that are not UTF-8 by their bytes, not by their lossy decoding", async () => {
    const bytes = Buffer.from(await readFile(await tinyModel()));
    const a = bytes.indexOf("<0xFE>");
    const b = bytes.indexOf("<0xFD>");
    const piece = (first: number) => Buffer.from([first, ...Buffer.from("0xFE>")]);
    piece(0xff).copy(bytes, a);
    piece(0xfe).copy(bytes, b); // both decode to "\uFFFD0xFE>", but the bytes differ
    const distinct = await readGgufInfo(await fixtureFile("invalid-utf8-distinct.gguf", bytes));
    assert.equal(distinct.invalidUtf8.get("tokenizer.ggml.tokens")?.size, 2);
    piece(0xff).copy(bytes, b);
    await assert.rejects(readGgufInfo(await fixtureFile("invalid-utf8-same.gguf", bytes)), refusedWith(/holds the bytes ff307846453e \(not UTF-8\) twice/));
  });

  it("checks a 150k-token vocabulary in well under 200 ms", () => {
    const tokens = Array.from({ length: 150_000 }, (_, i) => `tok${i.toString(36)}\u2581${i % 97}`);
    const info = withMeta(valid, { "tokenizer.ggml.tokens": tokens });
    // The best of three, so a busy machine does not fail a sanity bound.
    let ms = Infinity;
    for (let run = 0; run < 3; run++) {
      const started = performance.now();
      checkModel(info);
      ms = Math.min(ms, performance.now() - started);
    }
    assert.ok(ms < 200, `${ms.toFixed(1)} ms`);
    assert.throws(() => checkVocabulary(withMeta(valid, { "tokenizer.ggml.tokens": [...tokens, tokens[123_456]] })), refusedWith(/at ids 123456 and 150000/));
  });
});
