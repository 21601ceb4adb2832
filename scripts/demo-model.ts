// Writes models/demo.gguf: the project's deterministic character-level llama (see src/gguf/charModel.ts),
// so that a fresh checkout has a real model to load. "abc" continues "defg...", "." ends the text.
import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { TINY_CHAR_MODEL, writeCharModel } from "../src/gguf/charModel.ts";

const path = resolve(process.argv[2] ?? "models/demo.gguf");
await mkdir(resolve(path, ".."), { recursive: true });
const bytes = await writeCharModel(path, TINY_CHAR_MODEL);
console.log(`wrote ${path} (${(bytes / 1e6).toFixed(1)} MB)`);
