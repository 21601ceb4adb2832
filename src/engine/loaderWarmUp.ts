import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { f32Array, i32Array, str, strArray, u32, writeGguf } from "../gguf/writer.ts";

/** Enough entries for V8 to optimise the parser's loops; more costs the spare time and gains little (32,000: 125 ms instead of 100). */
const WARM_UP_TOKENS = 8_000;

/**
 * node-llama-cpp parses a model's GGUF header in JavaScript (`readGgufFileInfo`) before llama.cpp loads it, and
 * an engine process loads one model in its life, so every load runs that parser cold, while V8 is still
 * compiling it: on the 110M bench model `loadModel` takes ~350 ms cold and ~250 ms after the parser has read
 * one header of 8,000 tokens (`npx tsx bench/loader-warmup.ts`). A spare engine process has the time to read
 * such a header while it waits for its model; this writes one (no tensors, a vocabulary of `tokens` made-up
 * pieces) into a folder of its own under the system's temporary folder, has `read` parse it, and removes it.
 * Nothing is cached: the folder is gone when this settles, aborted or not.
 */
export async function warmUpGgufParser(read: (path: string, signal: AbortSignal) => Promise<unknown>, signal: AbortSignal, tokens = WARM_UP_TOKENS): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "kekahyde-warm-up-"));
  try {
    const path = join(dir, "header.gguf");
    await writeGguf(path, {
      metadata: [
        ["general.architecture", str("llama")],
        ["llama.context_length", u32(128)],
        ["tokenizer.ggml.model", str("llama")],
        ["tokenizer.ggml.tokens", strArray(Array.from({ length: tokens }, (_, i) => `w${i.toString(36)}`))],
        ["tokenizer.ggml.scores", f32Array(new Float32Array(tokens))],
        ["tokenizer.ggml.token_type", i32Array(new Int32Array(tokens).fill(1))],
      ],
      tensors: [],
    });
    if (!signal.aborted) await read(path, signal);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
