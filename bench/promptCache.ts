// The prompt-cache section of `npm run bench` (`--only prompt-cache`): a chat whose client resends the whole
// conversation every turn, a 1,500-token system prompt, five turns; time to first token of each turn and the
// prompt tokens each side took from its cache, Kekahyde (/v1/chat/completions, its prompt cache) side by side
// with llama-server (/completion with `cache_prompt: true`), with 1 and with 2 conversations at once (Kekahyde
// --parallel 2, llama-server -np 2). Both evaluate the same tokens: the bench renders each turn with the chat
// wrapper node-llama-cpp resolves for the model (the one the daemon uses) and sends llama-server those token
// ids; the daemon's usage.prompt_tokens and llama-server's tokens_evaluated must both equal their count.
//
// The assistant turns of the history are fixed texts, the same for both servers, not what each generated: the
// bench model (random weights) answers in filler tokens (" w123") whose text tokenizes to other tokens, so no
// client could resend them as generated anyway. Each turn therefore finds its prompt cached up to the start of
// the previous answer, on both sides alike.
import { rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveChatWrapper, type ChatHistoryItem, type Llama, type LlamaModel, type Token } from "node-llama-cpp";

export const SYSTEM_TOKENS = 1500;
const TURNS = 5;
const USER_CHARS = 24;
const ANSWER_CHARS = 32;
/** One token a turn: the wall time of the request is its time to first token. */
const MAX_TOKENS = 1;
const CONTEXT = 2048;
const REQUEST_TIMEOUT_MS = 180_000;

interface Server {
  url: string;
  stop(): Promise<void>;
}

export interface PromptCacheDeps {
  llama: Llama;
  model: string;
  reps: number;
  /** Kekahyde with --parallel `parallel`, the model loaded with a `CONTEXT`-token context per sequence. */
  startKekahyde(parallel: number): Promise<Server>;
  /** llama-server with -np `parallel`, `CONTEXT` tokens a slot; null without the peers. */
  startLlamaServer: ((parallel: number, ctx: number, logFile: string) => Promise<Server>) | null;
}

interface Turn {
  ttft_ms: number;
  prompt_tokens: number;
  cached_tokens: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const letters = (n: number) => Array.from({ length: n }, (_, i) => (i % 7 === 6 ? " " : String.fromCharCode(97 + Math.floor(Math.random() * 26)))).join("");

/**
 * One POST, answered whole; its wall time. The turns ask for one token, so that this is the time to the first
 * token on both servers alike, without their different streaming (llama-server's streamed responses have been
 * cut short here on a reused or even a fresh connection while it was busy; a 1-token answer needs none).
 */
function post(url: string, path: string, body: unknown): Promise<{ ms: number; json: Record<string, unknown> }> {
  const { hostname, port } = new URL(url);
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ hostname, port, method: "POST", path, agent: false, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } }, (res) => {
      res.setEncoding("utf8");
      let raw = "";
      res.on("data", (chunk: string) => (raw += chunk));
      res.on("end", () => {
        const ms = performance.now() - started;
        if (res.statusCode !== 200) return reject(new Error(`${path} answered ${res.statusCode}: ${raw.slice(0, 300)}`));
        resolve({ ms, json: JSON.parse(raw) as Record<string, unknown> });
      });
      res.on("error", reject);
    });
    req.on("error", (e) => reject(new Error(`${url}${path}: ${e.message}`)));
    // A server that stops answering must fail the bench, not hang it.
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer for ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.end(payload);
  });
}

interface Conversation {
  system: string;
  users: string[];
  answers: string[];
}

const conversation = (): Conversation => ({
  system: letters(SYSTEM_TOKENS),
  users: Array.from({ length: TURNS }, () => letters(USER_CHARS)),
  answers: Array.from({ length: TURNS }, () => letters(ANSWER_CHARS)),
});

/** The messages of turn `k` (1-based): the system prompt, the earlier turns with their fixed answers, the k-th question. */
function messages(c: Conversation, k: number): Array<{ role: string; content: string }> {
  const out = [{ role: "system", content: c.system }];
  for (let i = 0; i < k; i++) {
    out.push({ role: "user", content: c.users[i] });
    if (i < k - 1) out.push({ role: "assistant", content: c.answers[i] });
  }
  return out;
}

/** The same turn as node-llama-cpp's chat wrapper for this model renders it (what the daemon evaluates). */
function render(model: LlamaModel, c: Conversation, k: number): Token[] {
  const history: ChatHistoryItem[] = messages(c, k).map((m) =>
    m.role === "system" ? { type: "system", text: m.content } : m.role === "user" ? { type: "user", text: m.content } : { type: "model", response: [m.content] },
  );
  history.push({ type: "model", response: [] });
  return resolveChatWrapper(model).generateContextState({ chatHistory: history }).contextText.tokenize(model.tokenizer);
}

async function kekahydeTurn(url: string, c: Conversation, k: number): Promise<Turn> {
  const { ms, json } = await post(url, "/v1/chat/completions", { messages: messages(c, k), max_tokens: MAX_TOKENS, temperature: 0 });
  const usage = json.usage as { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  return { ttft_ms: ms, prompt_tokens: usage.prompt_tokens, cached_tokens: usage.prompt_tokens_details.cached_tokens };
}

async function llamaServerTurn(url: string, tokens: Token[]): Promise<Turn> {
  const { ms, json } = await post(url, "/completion", { prompt: tokens, n_predict: MAX_TOKENS, temperature: 0, cache_prompt: true });
  const r = json as { tokens_evaluated: number; timings: { cache_n?: number; prompt_n: number } };
  return { ttft_ms: ms, prompt_tokens: r.tokens_evaluated, cached_tokens: r.timings.cache_n ?? r.tokens_evaluated - r.timings.prompt_n };
}

type Side = "kekahyde" | "llama_server";

export async function promptCacheBench(deps: PromptCacheDeps): Promise<{ results: unknown; md: string[] }> {
  const vocab = await deps.llama.loadModel({ modelPath: deps.model, vocabOnly: true });
  const md: string[] = [];
  const results: Record<string, unknown> = {};
  const rows: Array<Array<string | number>> = [];
  const verdicts: string[] = [];
  try {
    for (const parallel of [1, 2]) {
      console.log(`   prompt cache, ${parallel} conversation(s) at once ...`);
      const kekahyde = await deps.startKekahyde(parallel);
      const serverLog = join(tmpdir(), `kekahyde-bench-llama-server-np${parallel}-${process.pid}.log`);
      const server = deps.startLlamaServer ? await deps.startLlamaServer(parallel, CONTEXT, serverLog) : null;
      // rounds[r][side][conversation][turn]
      const rounds: Array<Partial<Record<Side, Turn[][]>>> = [];
      try {
        for (let r = 0; r < deps.reps; r++) {
          // The same conversations for both sides in a round (fresh ones every round: turn 1 finds nothing cached).
          const convs = Array.from({ length: parallel }, conversation);
          const tokens = convs.map((c) => Array.from({ length: TURNS }, (_, k) => render(vocab, c, k + 1)));
          const longest = Math.max(...tokens.flat().map((t) => t.length));
          if (longest + MAX_TOKENS > CONTEXT) throw new Error(`turn 5 is ${longest} tokens: it does not fit ${CONTEXT}`);
          const sides: Side[] = server ? (r % 2 === 0 ? ["kekahyde", "llama_server"] : ["llama_server", "kekahyde"]) : ["kekahyde"];
          const round: Partial<Record<Side, Turn[][]>> = {};
          for (const side of sides) {
            round[side] = await Promise.all(
              convs.map(async (c, i) => {
                const turns: Turn[] = [];
                for (let k = 1; k <= TURNS; k++) {
                  const t = side === "kekahyde" ? await kekahydeTurn(kekahyde.url, c, k) : await llamaServerTurn(server!.url, tokens[i][k - 1]);
                  if (t.prompt_tokens !== tokens[i][k - 1].length) throw new Error(`${side} evaluated ${t.prompt_tokens} prompt tokens for turn ${k}, the rendered turn has ${tokens[i][k - 1].length}`);
                  turns.push(t);
                }
                return turns;
              }),
            );
            await sleep(100);
          }
          rounds.push(round);
          const show = (side: Side) => (round[side] ? round[side].map((ts) => ts.map((t) => `${round1(t.ttft_ms)}`).join("/")).join(" | ") : "n/a");
          console.log(`   round ${r + 1}: TTFT by turn, Kekahyde ${show("kekahyde")}; llama-server ${show("llama_server")}`);
        }
      } catch (e) {
        console.error(`   prompt cache failed; llama-server's log: ${serverLog}`);
        throw e;
      } finally {
        await kekahyde.stop();
        await server?.stop();
      }
      rmSync(serverLog, { force: true });
      // Medians over rounds and conversations; ratios are medians of each round's ratio (conversation i of one
      // side against conversation i of the other, measured in the same round).
      const all = (side: Side, k: number, f: (t: Turn) => number) => rounds.flatMap((r) => (r[side] ?? []).map((ts) => f(ts[k - 1])));
      const paired = (f: (r: Partial<Record<Side, Turn[][]>>, i: number) => number) => median(rounds.flatMap((r) => Array.from({ length: parallel }, (_, i) => f(r, i))).filter(Number.isFinite));
      const turns = Array.from({ length: TURNS }, (_, i) => i + 1).map((k) => ({
        turn: k,
        prompt_tokens: median(all("kekahyde", k, (t) => t.prompt_tokens)),
        kekahyde_ttft_ms: median(all("kekahyde", k, (t) => t.ttft_ms)),
        kekahyde_cached_tokens: all("kekahyde", k, (t) => t.cached_tokens),
        llama_server_ttft_ms: server ? median(all("llama_server", k, (t) => t.ttft_ms)) : null,
        llama_server_cached_tokens: server ? all("llama_server", k, (t) => t.cached_tokens) : null,
        ratio_vs_llama_server: server ? paired((r, i) => r.kekahyde![i][k - 1].ttft_ms / r.llama_server![i][k - 1].ttft_ms) : null,
      }));
      const t5_vs_t1 = paired((r, i) => r.kekahyde![i][4].ttft_ms / r.kekahyde![i][0].ttft_ms);
      const server_t5_vs_t1 = server ? paired((r, i) => r.llama_server![i][4].ttft_ms / r.llama_server![i][0].ttft_ms) : null;
      const t5 = turns[4].ratio_vs_llama_server;
      results[`conversations_${parallel}`] = { turns, turn5_vs_turn1: t5_vs_t1, llama_server_turn5_vs_turn1: server_t5_vs_t1, rounds };
      const cached = (xs: number[] | null) => (xs === null ? "n/a" : `${median(xs)}${Math.min(...xs) !== Math.max(...xs) ? ` (${Math.min(...xs)}–${Math.max(...xs)})` : ""}`);
      for (const t of turns) {
        rows.push([parallel, t.turn, t.prompt_tokens, round1(t.kekahyde_ttft_ms), cached(t.kekahyde_cached_tokens), t.llama_server_ttft_ms === null ? "n/a" : round1(t.llama_server_ttft_ms), cached(t.llama_server_cached_tokens), t.ratio_vs_llama_server === null ? "n/a" : `${t.ratio_vs_llama_server.toFixed(2)}×`]);
      }
      rows.push([parallel, "turn 5 / turn 1", "", `${t5_vs_t1.toFixed(2)}×`, "", server_t5_vs_t1 === null ? "n/a" : `${server_t5_vs_t1.toFixed(2)}×`, "", ""]);
      verdicts.push(
        `${parallel} conversation${parallel > 1 ? "s" : ""}: turn 5 ≤ llama-server's: ${t5 === null ? "n/a" : `${t5.toFixed(2)}×, ${t5 <= 1 ? "holds" : "does not hold"}`}; ` +
          `turn 5 ≤ 0.2× turn 1: ${t5_vs_t1.toFixed(2)}×, ${t5_vs_t1 <= 0.2 ? "holds" : "does not hold"}.`,
      );
    }
  } finally {
    await vocab.dispose();
  }
  md.push(
    `## 9. Prompt cache: a chat resent whole every turn (${SYSTEM_TOKENS}-token system prompt, ${USER_CHARS}-token questions, ${ANSWER_CHARS}-token answers in the history, 1 token generated a turn, greedy; time to first token = the wall time of that 1-token request, ms, median of ${deps.reps} rounds × conversations, taking turns)`,
    "",
    `Kekahyde: POST /v1/chat/completions (its prompt cache; cached = \`usage.prompt_tokens_details.cached_tokens\`). llama-server: POST /completion with the same turn rendered by the model's chat wrapper (node-llama-cpp's; the bench model has no template, so GeneralChatWrapper) sent as token ids, \`cache_prompt: true\` (cached = \`timings.cache_n\`). Not streamed: llama-server's streamed answers were cut short here now and then under load, and a 1-token answer needs no stream. Both sides' prompt token counts are checked equal to the rendered turn's. With 2 conversations, Kekahyde runs with --parallel 2 and llama-server with -np 2, and both conversations run at once. The answers in the history are fixed texts, so each turn is cached up to the start of the previous answer (the token generated there differs from it). Ratios are medians of each round's ratio.`,
    "",
  );
  md.push("| conversations | turn | prompt tokens | Kekahyde TTFT | Kekahyde cached tokens | llama-server TTFT | llama-server cached tokens | Kekahyde / llama-server |", "| --- | --- | --- | --- | --- | --- | --- | --- |");
  md.push(...rows.map((r) => `| ${r.join(" | ")} |`), "");
  md.push(`Targets: ${verdicts.join(" ")}`, "");
  return { results, md };
}

const round1 = (x: number) => round(x, 1);
