import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { expectedChatReply, expectedContinuation } from "../src/gguf/charModel.ts";
import { startTestDaemon, waitUntil, type TestDaemon } from "./helpers/daemon.ts";
import { fixtureFile, FIXTURES, slowModel, tinyModel } from "../testing/fixtures.ts";

// The daemon's own behaviour, end to end: real HTTP, the real node-llama-cpp engine, generated models.

async function json(res: Response): Promise<Record<string, any>> {
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  return (await res.json()) as Record<string, any>;
}

async function assertError(res: Response, status: number, code: string, message?: RegExp): Promise<Record<string, any>> {
  const body = await json(res);
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.success, false);
  assert.equal(body.code, code);
  assert.equal(typeof body.message, "string");
  assert.doesNotMatch(body.message, /\n\s+at /, "no stack trace leaks");
  if (message) assert.match(body.message, message);
  return body;
}

/** A plain completion (raw): the char model's text then depends on the prompt's last character. */
async function runText(d: TestDaemon, prompt: string, maxTokens?: number): Promise<{ res: Response; text: string }> {
  const res = await d.post("/run_prompt", maxTokens === undefined ? { prompt, raw: true } : { prompt, raw: true, max_tokens: maxTokens });
  return { res, text: await res.text() };
}

/** The daemon keeps serving: /status answers with a known state and a real run still writes the right text. */
async function assertStillServing(d: TestDaemon, expectModel: boolean): Promise<void> {
  const status = await d.status();
  assert.ok(["empty", "idle"].includes(status.state), `state ${status.state}`);
  assert.equal(status.model_loaded, expectModel);
  if (expectModel) {
    const { res, text } = await runText(d, "abc", 10);
    assert.equal(res.status, 200);
    assert.equal(text, "defghijklm");
  }
}

describe("daemon over HTTP with the real engine", () => {
  let d: TestDaemon;
  let tiny: string;
  let slow: string;

  before(async () => {
    [tiny, slow] = await Promise.all([tinyModel(), slowModel()]);
    d = await startTestDaemon();
  });
  after(async () => {
    await d?.close();
  });

  it("starts empty, with the seed's status fields", async () => {
    const status = await d.status();
    assert.equal(status.model_loaded, false);
    assert.equal(status.state, "empty");
    assert.equal(typeof status.cpu_usage, "number");
    assert.equal(typeof status.memory_usage, "number");
    assert.equal(status.model, null);
    assert.equal(typeof status.uptime_s, "number");
  });

  it("answers run_prompt without a model with 409 that says to load one", async () => {
    await assertError(await d.post("/run_prompt", { prompt: "abc" }), 409, "NO_MODEL", /load_model/);
  });

  it("answers stop with nothing running with stopped: false", async () => {
    const res = await d.post("/stop");
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), { stopped: false, dropped: 0 });
  });

  it("leaves the daemon empty with last_error when the first load fails", async () => {
    await assertError(await d.post("/load_model", { path: "/no/such/model.gguf" }), 404, "MODEL_NOT_FOUND", /No file at \/no\/such\/model.gguf/);
    const status = await d.status();
    assert.equal(status.state, "empty");
    assert.equal(status.model_loaded, false);
    assert.equal(status.last_error.code, "MODEL_NOT_FOUND");
  });

  it("loads a model with the seed's exact answer plus model details", async () => {
    const res = await d.post("/load_model", { path: tiny });
    const body = await json(res);
    assert.equal(res.status, 200);
    assert.equal(body.success, true);
    assert.equal(body.message, "Model loaded");
    assert.equal(body.model.path, tiny);
    assert.equal(body.model.name, "kekahyde-char-tiny");
    assert.equal(body.model.architecture, "llama");
    assert.equal(body.model.size_bytes, (await readFile(tiny)).length);
    assert.equal(body.model.context_size, 2048);
    assert.equal(body.model.gpu, false);
    assert.ok(["prebuilt", "localBuild"].includes(body.model.engine_build), "says which llama.cpp binary runs the model");
    assert.equal(body.model.flash_attention, "auto", "the context is created with llama.cpp's own flash attention default");
    const status = await d.status();
    assert.equal(status.state, "idle");
    assert.equal(status.model_loaded, true);
    assert.equal(status.last_error, null, "a successful load clears the last error");
    assert.equal(status.model.name, "kekahyde-char-tiny");
  });

  it("creates the model's context with --flash-attention off or on, and writes the same text either way", async () => {
    for (const mode of ["off", "on"] as const) {
      const other = await startTestDaemon({ flashAttention: mode });
      try {
        const body = await json(await other.post("/load_model", { path: tiny }));
        assert.equal(body.model.flash_attention, mode);
        const res = await other.post("/run_prompt", { prompt: "abc", raw: true, max_tokens: 10 });
        assert.equal(await res.text(), "defghijklm");
      } finally {
        await other.close();
      }
    }
  });

  it("answers the seed's {\"prompt\"} alone with the model's exact chat reply as text/plain", async () => {
    const res = await d.post("/run_prompt", { prompt: "Explain recursion" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(res.headers.get("x-finish-reason"), "length", "the char model never ends a chat reply");
    const text = await res.text();
    assert.equal(text, expectedChatReply(text.length));
    assert.ok(text.startsWith(" abcdefghijklmnopqrstuvwxyz"));
  });

  it("generates the model's exact text as text/plain", async () => {
    const { res, text } = await runText(d, "Explain recursion", 40);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(res.headers.get("x-finish-reason"), "length");
    assert.equal(res.headers.get("x-completion-tokens"), "40");
    assert.equal(text, expectedContinuation("Explain recursion", 40));
    assert.equal(text, "opqrstuvwxyzabcdefghijklmnopqrstuvwxyzab");
  });

  it("reports finish reason stop when the model ends the text", async () => {
    const { res, text } = await runText(d, "Hello.");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-finish-reason"), "stop");
    assert.equal(text, "");
  });

  it("generates until the context is full when no max_tokens is given", async () => {
    const { res, text } = await runText(d, "abc");
    assert.equal(res.headers.get("x-finish-reason"), "length");
    const promptTokens = Number(res.headers.get("x-prompt-tokens"));
    assert.equal(promptTokens, 4, "BOS + three characters");
    assert.equal(text, expectedContinuation("abc", 2048 - promptTokens));
  });

  it("passes through generating and back to idle, as the state log shows", async () => {
    const before = d.logs.lines.length;
    await runText(d, "xyz", 5);
    const transitions = d.logs.lines.slice(before).filter((l) => l.event === "state").map((l) => `${String(l.from)}->${String(l.to)}`);
    assert.deepEqual(transitions, ["idle->generating", "generating->idle"]);
  });

  it("refuses a prompt larger than the context with 400 and both numbers", async () => {
    const body = await assertError(await d.post("/run_prompt", { prompt: "a".repeat(3000), raw: true }), 400, "PROMPT_TOO_LONG", /3001 tokens.*2048/);
    assert.equal(body.prompt_tokens, 3001);
    assert.equal(body.context_size, 2048);
    await assertStillServing(d, true);
  });

  describe("bad requests get a clear error and lose nothing", () => {
    const cases: Array<[string, () => Promise<Response>, number, string, RegExp?]> = [
      ["malformed JSON", () => d.post("/load_model", '{"path": '), 400, "INVALID_JSON", /not valid JSON/],
      ["a JSON array body", () => d.post("/load_model", "[1]"), 400, "BAD_REQUEST", /JSON object/],
      ["a missing path", () => d.post("/load_model", {}), 400, "BAD_REQUEST", /"path"/],
      ["an empty path", () => d.post("/load_model", { path: "  " }), 400, "BAD_REQUEST", /"path"/],
      ["a non-string path", () => d.post("/load_model", { path: 42 }), 400, "BAD_REQUEST", /"path"/],
      ["an empty body", () => d.post("/run_prompt", ""), 400, "BAD_REQUEST", /empty/],
      ["an empty prompt", () => d.post("/run_prompt", { prompt: "" }), 400, "BAD_REQUEST", /"prompt"/],
      ["a non-string prompt", () => d.post("/run_prompt", { prompt: ["a"] }), 400, "BAD_REQUEST", /"prompt"/],
      ["a bad max_tokens", () => d.post("/run_prompt", { prompt: "a", max_tokens: -3 }), 400, "BAD_REQUEST", /"max_tokens" must be an integer from 1/],
      ["an unknown route", () => d.get("/nope"), 404, "ROUTE_NOT_FOUND", /GET \/nope/],
      ["a wrong method", () => d.get("/run_prompt"), 405, "METHOD_NOT_ALLOWED", /GET is not allowed/],
      ["a missing model file", () => d.post("/load_model", { path: "/no/such.gguf" }), 404, "MODEL_NOT_FOUND"],
      ["a directory as model", () => d.post("/load_model", { path: FIXTURES }), 422, "MODEL_INVALID", /is a directory/],
    ];
    for (const [what, send, status, code, message] of cases) {
      it(`${what} → ${status} ${code}, and the loaded model keeps serving`, async () => {
        await assertError(await send(), status, code, message);
        await assertStillServing(d, true);
      });
    }

    it("a file that is not GGUF → 422 that says why, previous model kept", async () => {
      const path = await fixtureFile("not-gguf.txt", Buffer.from("hello, I am a text file\n"));
      await assertError(await d.post("/load_model", { path }), 422, "MODEL_INVALID", /not a GGUF file/);
      const status = await d.status();
      assert.equal(status.state, "idle");
      assert.equal(status.last_error.code, "MODEL_INVALID");
      await assertStillServing(d, true);
    });

    it("a truncated model → 422 that says it is truncated, previous model kept", async () => {
      const bytes = await readFile(tiny);
      for (const cut of [0, 3, 24, 200, Math.floor(bytes.length / 2), bytes.length - 1]) {
        const path = await fixtureFile(`truncated-${cut}.gguf`, bytes.subarray(0, cut));
        await assertError(await d.post("/load_model", { path }), 422, "MODEL_INVALID", /truncated|too short/);
      }
      await assertStillServing(d, true);
    });
  });

  describe("a long generation", () => {
    before(async () => {
      const res = await d.post("/load_model", { path: slow });
      assert.equal(res.status, 200, await res.text());
    });

    it("replaced the previous model", async () => {
      const status = await d.status();
      assert.equal(status.model.name, "kekahyde-char-slow");
      assert.equal(status.state, "idle");
    });

    it("is cancelled by /stop: partial text at once, and the engine is free for the next run", async () => {
      const prompt = "The quick brown fox";
      const running = d.post("/run_prompt", { prompt, raw: true, max_tokens: 6000 });
      await waitUntil(async () => (await d.status()).state === "generating", 10_000, "state generating");

      // While it runs: /status answers from the latest sample, and load/run are refused.
      const during = await d.status();
      assert.equal(during.state, "generating");
      await assertError(await d.post("/load_model", { path: tiny }), 409, "BUSY", /POST \/stop first/);

      await waitUntil(async () => (await d.status()).generation?.tokens >= 5, 10_000, "some text generated");
      const stopAt = performance.now();
      const stop = await d.post("/stop");
      assert.deepEqual(await json(stop), { stopped: true, dropped: 0 });
      const res = await running;
      const text = await res.text();
      const cancelMs = performance.now() - stopAt;

      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-finish-reason"), "cancelled");
      const full = expectedContinuation(prompt, 6000);
      assert.ok(text.length > 0 && text.length < 6000, `partial text of ${text.length} characters`);
      assert.equal(text, full.slice(0, text.length), "the partial text is what the model wrote");
      assert.ok(cancelMs < 2000, `cancelled in ${cancelMs.toFixed(0)} ms`);
      assert.equal((await d.status()).state, "idle");

      const next = await runText(d, "abc", 12);
      assert.equal(next.text, "defghijklmno");
    });

    it("refuses a second load while one is running", async () => {
      const answers = await Promise.all([d.post("/load_model", { path: slow }), d.post("/load_model", { path: tiny })]);
      assert.deepEqual(answers.map((r) => r.status).sort(), [200, 409]);
      const refused = answers.find((r) => r.status === 409)!;
      await assertError(refused, 409, "MODEL_LOADING", /already loading/);
      await assertStillServing(d, true);
    });
  });
});
