// `node --import tsx bench/speculative.ts [--rounds N] [--tokens N] [--threads N] [--max-draft N] [--no-peers]`
//
// Speculative decoding (src/engine/speculation/), in-process, against plain decoding on the same context
// sequence, and side by side llama-server's own (`--model-draft`, and its n-gram lookup `--spec-type
// ngram-simple`). Models are generated (testing/gguf/draftModels.ts): a ~330 MB Q8_0 char target, a ~1 MB draft
// that writes the same text (the ceiling: every drafted token holds) and one that never agrees (the floor).
// Contenders take turns within each round; ratios are taken per round and their median reported, so load
// from other work on the machine drifts out. Results: bench/results/speculative-<time>.{json,md}.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama, LlamaLogLevel, type LlamaContextSequence, type LlamaModel, type Token } from "node-llama-cpp";
import { writeCharModel } from "../src/gguf/charModel.ts";
import { AGREEING_DRAFT_MODEL, DISAGREEING_DRAFT_MODEL, SPEC_TARGET_MODEL, writeDraftTarget } from "../testing/gguf/draftModels.ts";
import { DEFAULT_MAX_DRAFT, runSpeculativeLoop, type DraftOptions } from "../src/engine/speculation/speculativeLoop.ts";
import { runTokenLoop } from "../src/engine/tokenLoop.ts";
import { PEER_BIN, peersAvailable } from "./peers.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const ROUNDS = Number(opt("rounds", "5"));
const TOKENS = Number(opt("tokens", "128"));
const THREADS = Number(opt("threads", "1"));
const MAX_DRAFT = Number(opt("max-draft", String(DEFAULT_MAX_DRAFT)));
const PEERS = !args.includes("--no-peers") && peersAvailable();

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const loadAverage = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

// ---- models ------------------------------------------------------------------------------------------------

const hash = createHash("sha256")
  .update(["testing/gguf/draftModels.ts", "src/gguf/charModel.ts", "src/gguf/writer.ts", "src/gguf/format.ts", "src/gguf/llamaMetadata.ts"].map((f) => readFileSync(join(ROOT, f))).join("\0"))
  .digest("hex")
  .slice(0, 10);
const MODELS = join(ROOT, "bench", "models");
mkdirSync(MODELS, { recursive: true });
async function generated(name: string, write: (path: string) => Promise<number>): Promise<string> {
  const path = join(MODELS, `${name}-${hash}.gguf`);
  if (!existsSync(path)) {
    await write(`${path}.tmp`);
    (await import("node:fs")).renameSync(`${path}.tmp`, path);
  }
  return path;
}
const targetPath = await generated(SPEC_TARGET_MODEL.name, (p) => writeDraftTarget(p, SPEC_TARGET_MODEL));
const agreePath = await generated(AGREEING_DRAFT_MODEL.name, (p) => writeCharModel(p, AGREEING_DRAFT_MODEL));
const disagreePath = await generated(DISAGREEING_DRAFT_MODEL.name, (p) => writeCharModel(p, DISAGREEING_DRAFT_MODEL));

// The answer copies the prompt (the char model continues the alphabet), so prompt lookup can draft it all.
const PROMPT_TEXT = "abcdefghijklmnopqrstuvwxyz".repeat(2) + " abc";

// ---- Kekahyde in-process -----------------------------------------------------------------------------------

const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, maxThreads: THREADS, logLevel: LlamaLogLevel.error });
const threads = { ideal: THREADS, min: THREADS };
const target = await llama.loadModel({ modelPath: targetPath });
// Flash attention as the daemon creates its contexts (--flash-attention auto) and llama-server runs.
const targetSequence = (await target.createContext({ contextSize: 1024, threads, flashAttention: "auto" })).getSequence();
async function draftSequence(path: string): Promise<{ model: LlamaModel; sequence: LlamaContextSequence }> {
  const model = await llama.loadModel({ modelPath: path });
  return { model, sequence: (await model.createContext({ contextSize: 1024, threads, flashAttention: "auto" })).getSequence() };
}
const agree = await draftSequence(agreePath);
const disagree = await draftSequence(disagreePath);
const prompt: Token[] = [target.tokens.bos!, ...target.tokenize(PROMPT_TEXT)];
const sampling = { temperature: 0, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1 };

interface Run {
  tps: number;
  text: string;
  drafted?: number;
  accepted?: number;
}

/** One generation of TOKENS tokens; the prompt is in the sequence's cache already (warm-up), as for llama-server. */
async function ours(draft: DraftOptions | null): Promise<Run> {
  const signal = new AbortController().signal;
  const t0 = performance.now();
  if (draft) {
    const r = await runSpeculativeLoop({ model: target, sequence: targetSequence, prompt, maxTokens: TOKENS, sampling, signal, draft });
    const s = (performance.now() - t0) / 1000;
    return { tps: r.completionTokens / s, text: r.text, drafted: r.draftedTokens, accepted: r.acceptedTokens };
  }
  const r = await runTokenLoop({ model: target, sequence: targetSequence, prompt, maxTokens: TOKENS, sampling, signal });
  const s = (performance.now() - t0) / 1000;
  return { tps: r.completionTokens / s, text: r.text };
}

// ---- llama-server ------------------------------------------------------------------------------------------

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
interface Server {
  url: string;
  child: ChildProcess;
}
async function llamaServer(extra: string[]): Promise<Server> {
  const port = await freePort();
  const child = spawn(join(PEER_BIN, "llama-server"), ["-m", targetPath, "--host", "127.0.0.1", "--port", String(port), "-t", String(THREADS), "-tb", String(THREADS), "-c", "1024", "-np", "1", "--log-disable", ...extra], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err = (err + d).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`llama-server ${extra.join(" ")} exited: ${err}`);
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (ok) return { url, child };
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`llama-server ${extra.join(" ")} did not start: ${err}`);
}
async function theirs(server: Server): Promise<Run> {
  const res = await fetch(`${server.url}/completion`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: PROMPT_TEXT, n_predict: TOKENS, temperature: 0, top_k: 1, cache_prompt: true, ignore_eos: false }),
  });
  const body = (await res.json()) as { content: string; timings: { predicted_n: number; predicted_ms: number; draft_n?: number; draft_n_accepted?: number } };
  return { tps: body.timings.predicted_n / (body.timings.predicted_ms / 1000), text: body.content, drafted: body.timings.draft_n, accepted: body.timings.draft_n_accepted };
}

// ---- the run -----------------------------------------------------------------------------------------------

type Contender = { name: string; side: "kekahyde" | "llama-server"; run: () => Promise<Run> };
const contenders: Contender[] = [
  { name: "plain", side: "kekahyde", run: () => ours(null) },
  { name: "draft model, ceiling (always agrees)", side: "kekahyde", run: () => ours({ kind: "model", ...agree, maxDraft: MAX_DRAFT }) },
  { name: "draft model, floor (never agrees)", side: "kekahyde", run: () => ours({ kind: "model", ...disagree, maxDraft: MAX_DRAFT }) },
  { name: "prompt lookup (n-gram 3)", side: "kekahyde", run: () => ours({ kind: "lookup", ngramMax: 3, maxDraft: MAX_DRAFT }) },
];
const servers: Server[] = [];
if (PEERS) {
  const spec = ["-td", String(THREADS), "-tbd", String(THREADS), "--spec-draft-n-max", String(MAX_DRAFT)];
  const configs: Array<[string, string[]]> = [
    ["plain", []],
    // Without --spec-type draft-simple, this llama-server loads the draft model but never drafts (draft_n absent).
    ["--model-draft, ceiling", ["-md", agreePath, "--spec-type", "draft-simple", ...spec]],
    ["--model-draft, floor", ["-md", disagreePath, "--spec-type", "draft-simple", ...spec]],
    [`--spec-type ngram-simple (n 3, m ${MAX_DRAFT})`, ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3", "--spec-ngram-simple-size-m", String(MAX_DRAFT), "--spec-draft-n-max", String(MAX_DRAFT)]],
  ];
  for (const [name, extra] of configs) {
    const server = await llamaServer(extra);
    servers.push(server);
    contenders.push({ name, side: "llama-server", run: () => theirs(server) });
  }
}

const loads: string[] = [loadAverage()];
const runs = new Map<string, Run[]>(contenders.map((c) => [`${c.side}: ${c.name}`, []]));
try {
  for (const c of contenders) await c.run(); // warm-up: the prompt into each cache, pages into memory
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of contenders) {
      const r = await c.run();
      runs.get(`${c.side}: ${c.name}`)!.push(r);
      console.log(`round ${round + 1} ${c.side}: ${c.name}: ${r.tps.toFixed(1)} tok/s${r.drafted != null ? ` drafted ${r.drafted} accepted ${r.accepted}` : ""}`);
    }
    loads.push(loadAverage());
  }
} finally {
  for (const s of servers) s.child.kill();
}

const base = (side: string) => runs.get(`${side}: plain`)!;
const rows = contenders.map((c) => {
  const key = `${c.side}: ${c.name}`;
  const rs = runs.get(key)!;
  const ratios = rs.map((r, i) => r.tps / base(c.side)[i].tps);
  const kekahydePlain = base("kekahyde");
  return {
    side: c.side,
    contender: c.name,
    tokens_per_s: median(rs.map((r) => r.tps)),
    per_round: rs.map((r) => Number(r.tps.toFixed(2))),
    vs_own_plain: median(ratios),
    vs_kekahyde_plain: median(rs.map((r, i) => r.tps / kekahydePlain[i].tps)),
    drafted: rs[0]?.drafted ?? null,
    accepted: rs[0]?.accepted ?? null,
    same_text_as_kekahyde_plain: rs.every((r) => r.text === kekahydePlain[0].text),
  };
});
const ceiling = rows.find((r) => r.side === "kekahyde" && r.contender === "draft model, ceiling (always agrees)")!;
const floor = rows.find((r) => r.side === "kekahyde" && r.contender.startsWith("draft model, floor"))!;
const theirCeiling = rows.find((r) => r.side === "llama-server" && r.contender.startsWith("--model-draft, ceiling"));
const ceilingVsServer = theirCeiling ? median(runs.get(`kekahyde: ${ceiling.contender}`)!.map((r, i) => r.tps / runs.get(`llama-server: ${theirCeiling.contender}`)![i].tps)) : null;
const targets = {
  "ceiling ≥ 2× plain": { value: ceiling.vs_own_plain, holds: ceiling.vs_own_plain >= 2 },
  "ceiling ≥ llama-server --model-draft": { value: ceilingVsServer, holds: ceilingVsServer === null ? null : ceilingVsServer >= 1 },
  "floor ≥ 0.9× plain": { value: floor.vs_own_plain, holds: floor.vs_own_plain >= 0.9 },
};

const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
const results = {
  when: new Date().toISOString(),
  command: `node --import tsx bench/speculative.ts ${args.join(" ")}`.trim(),
  machine: { cpu: cpus()[0]?.model, vcpus: cpus().length, load_average: loads, peers: PEERS ? relative(ROOT, PEER_BIN) : "not built (npm run bench:peers)" },
  settings: { threads: THREADS, tokens: TOKENS, rounds: ROUNDS, max_draft: MAX_DRAFT, prompt: PROMPT_TEXT, greedy: true },
  models: { target: relative(ROOT, targetPath), ceiling_draft: relative(ROOT, agreePath), floor_draft: relative(ROOT, disagreePath) },
  rows,
  targets,
};
const md: string[] = [
  `# Speculative decoding (${results.when})`,
  "",
  `- \`${results.command}\``,
  `- ${results.machine.cpu}, ${results.machine.vcpus} vCPUs; load average (1, 5, 15 min) at the start and after each round: ${loads.join(" → ")}`,
  `- target: generated ${SPEC_TARGET_MODEL.blockCount}-layer Q8_0 char model (${relative(ROOT, targetPath)}); drafts: the ~1 MB char model (same text) and the skip model (never the same letter)`,
  `- ${THREADS} thread(s) for target and draft on both sides; ${TOKENS} greedy tokens a generation, prompt cached; max draft ${MAX_DRAFT}; ${ROUNDS} rounds, contenders taking turns; ratios are medians of per-round ratios`,
  `- Kekahyde: in-process (runTokenLoop / runSpeculativeLoop), tokens ÷ wall time of the loop; llama-server: its own timings (predicted_n ÷ predicted_ms)`,
  "",
  "| side | contender | tokens/s (median) | × own plain | × Kekahyde plain | drafted / accepted (one run) | same text |",
  "| --- | --- | --- | --- | --- | --- | --- |",
  ...rows.map((r) => `| ${r.side} | ${r.contender} | ${r.tokens_per_s.toFixed(1)} | ${r.vs_own_plain.toFixed(2)}× | ${r.vs_kekahyde_plain.toFixed(2)}× | ${r.drafted ?? "–"} / ${r.accepted ?? "–"} | ${r.same_text_as_kekahyde_plain ? "yes" : "no"} |`),
  "",
  "| target | value | holds |",
  "| --- | --- | --- |",
  ...Object.entries(targets).map(([k, v]) => `| ${k} | ${v.value === null ? "n/a" : `${v.value.toFixed(2)}×`} | ${v.holds === null ? "n/a" : v.holds ? "yes" : "no"} |`),
  "",
];
const out = join(ROOT, "bench", "results", `speculative-${stamp}`);
writeFileSync(`${out}.json`, JSON.stringify(results, null, 2) + "\n");
writeFileSync(`${out}.md`, md.join("\n"));
console.log(md.join("\n"));
console.log(`wrote ${relative(ROOT, out)}.{json,md}`);
process.exit(0);
