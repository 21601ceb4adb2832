// Feeds every crafted model (testing/gguf/craftedModels.ts) to the real engine, each in its own child process so
// that a native crash takes only the child down, and to our bounded check. Prints a Markdown table:
// what llama.cpp does with the raw file, and what our check says.
//
//   npx tsx scripts/probe-crafted.ts [--only name,name] [--timeout SECONDS] [--keep DIR]
//
// The child loads the model as the daemon does (prebuilt CPU binary, no download, one thread), makes a
// 64-token context, generates one token as a plain completion (the daemon's warm-up) and one as a chat reply.
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const args = parseArgs({
  options: {
    child: { type: "string" },
    only: { type: "string" },
    timeout: { type: "string", default: "90" },
    keep: { type: "string" },
  },
});

async function child(path: string): Promise<void> {
  const stage = (s: string) => process.stdout.write(`stage ${s} ${Math.round(performance.now())}\n`);
  const { getLlama, LlamaChat, LlamaCompletion, LlamaLogLevel } = await import("node-llama-cpp");
  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    maxThreads: 1,
    logLevel: LlamaLogLevel.warn,
  });
  stage("load");
  const model = await llama.loadModel({ modelPath: path });
  stage("context");
  const context = await model.createContext({ contextSize: 64, threads: { ideal: 1, min: 1 } });
  const sequence = context.getSequence();
  stage("completion");
  const completion = new LlamaCompletion({ contextSequence: sequence });
  await completion.generateCompletion("a", { maxTokens: 1, temperature: 0 });
  completion.dispose();
  await sequence.clearHistory();
  stage("chat");
  const chat = new LlamaChat({ contextSequence: sequence });
  stage("chat-generate");
  await chat.generateResponse([{ type: "user", text: "Hi" }, { type: "model", response: [] }], { maxTokens: 1, temperature: 0 });
  stage("done");
}

interface Outcome {
  outcome: "ok" | "js-error" | "crash" | "timeout";
  stage: string;
  detail: string;
  ms: number;
}

function runChild(path: string, timeoutS: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const started = performance.now();
    const proc = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", path], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NODE_OPTIONS: "" },
    });
    let out = "";
    let err = "";
    proc.stdout.on("data", (b) => (out += b));
    proc.stderr.on("data", (b) => (err += b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill("SIGKILL");
    }, timeoutS * 1000);
    proc.on("close", (code, signal) => {
      clearTimeout(timer);
      const ms = Math.round(performance.now() - started);
      const stages = [...out.matchAll(/^stage (\S+)/gm)].map((m) => m[1]);
      const stage = stages.at(-1) ?? "start";
      const lines = err.split("\n").map((l) => l.trim()).filter((l) => l && !/^at |^\^|^node:internal|^Node\.js v/.test(l));
      const jsError = out.match(/^js-error (.*)$/m)?.[1];
      if (timedOut) return resolve({ outcome: "timeout", stage, detail: `killed after ${timeoutS} s (${lines.at(-1) ?? ""})`, ms });
      if (code === 0 && stage === "done") return resolve({ outcome: "ok", stage, detail: "", ms });
      if (code === 3 && jsError) return resolve({ outcome: "js-error", stage, detail: jsError, ms });
      const native = lines.filter((l) => /GGML_ASSERT|GGML_ABORT|error|terminate|what\(\)|Fatal|fatal|Segmentation|invalid|unsupported/i.test(l));
      resolve({ outcome: "crash", stage, detail: `${signal ?? `exit ${code}`}: ${(native.slice(-2).join(" | ") || lines.at(-1) || "").slice(0, 300)}`, ms });
    });
  });
}

async function main(): Promise<void> {
  const { CRASH_CLASSES } = await import("../testing/gguf/craftedModels.ts");
  const { readGgufInfo } = await import("../src/gguf/reader.ts");
  const only = args.values.only?.split(",");
  const dir = args.values.keep ?? (await mkdtemp(join(tmpdir(), "kekahyde-crafted-")));
  await mkdir(dir, { recursive: true });
  console.log("| class | expected | without our check (raw llama.cpp) | stage | ms | with our check |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  try {
    for (const c of CRASH_CLASSES) {
      if (only && !only.includes(c.name)) continue;
      const path = join(dir, `${c.name}.gguf`);
      await c.write(path);
      const raw = await runChild(path, Number(args.values.timeout));
      let checked: string;
      try {
        await readGgufInfo(path);
        checked = "passes";
      } catch (e) {
        checked = `refused: ${(e as Error).message}`;
      }
      const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
      console.log(`| ${c.name} | ${c.expected} | ${cell(raw.outcome + (raw.detail ? `: ${raw.detail}` : ""))} | ${raw.stage} | ${raw.ms} | ${cell(checked)} |`);
    }
  } finally {
    if (!args.values.keep) await rm(dir, { recursive: true, force: true });
  }
}

if (args.values.child) {
  child(args.values.child).then(
    () => process.exit(0),
    (e) => {
      process.stdout.write(`js-error ${String((e as Error)?.message ?? e).split("\n")[0]}\n`);
      process.exit(3);
    },
  );
} else {
  await main();
}
