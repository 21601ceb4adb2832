import { randomBytes } from "node:crypto";
import * as nodeLlamaCpp from "node-llama-cpp";
import type { ChatHistoryItem, ChatModelFunctions, ChatModelResponse, ChatWrapper, Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";
import { templateSupportsTools } from "../catalogue/facts.ts";
import { isKekahydeError, KekahydeError, toKekahydeError } from "../errors.ts";
import si from "systeminformation";
import { SAMPLING_DEFAULTS } from "../domain/defaults.ts";
import type { ChatMessage, FinishReason, GenerateResult, TokenLogprob, ToolCall, ToolDefinition } from "../domain/generation.ts";
import { defaultModelName, type FlashAttentionMode, type ModelInfo } from "../domain/models.ts";
import { toGrammarSchema } from "./jsonSchema.ts";
import { warmUpGgufParser } from "./loaderWarmUp.ts";
import { planModel } from "./planning.ts";
import { sourceBuildOptions } from "./sourceBuild.ts";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../domain/jobs.ts";
import { ModelJobs } from "./modelJobs.ts";
import { runSpeculativeLoop, speculates, type DraftOptions } from "./speculation/speculativeLoop.ts";
import { commonPrefix, type TokenLoopStop } from "./tokenLoop.ts";
import { droppableCount, dropOldestTurns, fewestDropsThatFit, leastTurnsToDrop } from "./truncation.ts";
import type { Engine, EngineSettings, GenerateOptions, JobOptions, LoadedModel } from "./types.ts";

export type LlamaEngineOptions = EngineSettings;

const STOP_REASONS: Record<string, FinishReason> = {
  eogToken: "stop",
  stopGenerationTrigger: "stop",
  customStopTrigger: "stop",
  maxTokens: "length",
  abort: "cancelled",
};

function samplingFor(request: GenerateOptions) {
  const s = { ...SAMPLING_DEFAULTS, ...request.sampling };
  return {
    temperature: s.temperature,
    topK: s.topK,
    topP: s.topP,
    minP: s.minP,
    seed: s.seed,
    repeatPenalty: s.repeatPenalty === 1 ? (false as const) : { penalty: s.repeatPenalty },
  };
}

/** How the token loop's ends read as finish reasons. */
const LOOP_FINISH: Record<TokenLoopStop, FinishReason> = { eog: "stop", stop: "stop", length: "length", abort: "cancelled" };

/** A request's prompt, ready for a sequence: its tokens, and what the generation needs beside them. */
interface PreparedPrompt {
  tokens: Token[];
  /** The conversation as node-llama-cpp's history (for LlamaChat, when tools are offered); null for a raw prompt. */
  history: ChatHistoryItem[] | null;
  functions: ChatModelFunctions | undefined;
  /** The chat template's end-of-turn markers. */
  stopTokens: Token[][];
  stopStrings: string[];
  /** What the reply may begin with that is not part of it (whitespace after the template's turn header). */
  ignoreStart: string[];
  truncatedMessages: number;
}

/**
 * Renders the conversation with the model's chat template. A template may refuse a conversation
 * (`raise_exception`: "Conversation roles must alternate user/assistant/…", a limit on turns): that is the
 * request's fault, not the engine's, so it is a 400 with the template's own words and the model stays loaded.
 */
function renderTemplate<T>(render: () => T): T {
  try {
    return render();
  } catch (e) {
    if (isKekahydeError(e)) throw e;
    const said = e instanceof Error ? e.message : String(e);
    throw new KekahydeError(
      "BAD_REQUEST",
      `The model's chat template refused this conversation: ${said}. Change the messages to what the template accepts (for many templates: roles alternating user/assistant after an optional system message).`,
      { field: "messages", reason: "chat_template" },
    );
  }
}

/**
 * What a generation's error means. A tool's parameters become a grammar only once the model names the tool,
 * mid-generation: a grammar llama.cpp's parser refuses there is still the request's fault (400), not the
 * engine's. Anything else thrown while evaluating is an engine failure.
 */
function failureOf(e: unknown): KekahydeError {
  const said = e instanceof Error ? e.message : String(e);
  if (!isKekahydeError(e) && /failed to parse grammar/i.test(said)) {
    return new KekahydeError("BAD_REQUEST", `A tool's parameters could not be made into a grammar: ${said}. Simplify the tool's JSON schema.`, { field: "tools", reason: "grammar" });
  }
  return toKekahydeError(e, "ENGINE_FAILURE", "generation failed in the engine");
}

/** A tool call's id, unique enough for a conversation: "call_" and 24 random characters, as OpenAI's look. */
const newCallId = (): string => `call_${randomBytes(18).toString("base64url").replace(/[-_]/g, "x").slice(0, 24)}`;

/** A tool call's arguments or a tool's result as node-llama-cpp keeps them: parsed JSON, else the text itself. */
function parsedOrText(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The same chat wrapper, but its model turn starts inside a function call: node-llama-cpp then generates the
 * call's name under a grammar of the available names and its arguments under a grammar of their schema (its
 * "initially engaged" function-call mode). This is how tool_choice "required" or a named function is kept.
 */
function callingWrapper(wrapper: ChatWrapper): ChatWrapper {
  const forced = Object.create(wrapper) as ChatWrapper;
  forced.generateContextState = (options) => {
    // Triggers that would let the model choose what to write first (a thought, a channel) do not apply.
    const { prefixTriggers: _p, noPrefixTrigger: _n, detectFunctionCalls: _d, rerender: _r, ...state } = wrapper.generateContextState(options);
    return { ...state, functionCall: { initiallyEngaged: true, disengageInitiallyEngaged: [] } };
  };
  return forced;
}

// node-llama-cpp is imported with this module (only engine processes import it, and each starts the library at
// once), not with `import()`: in the engine's one-file bundle (scripts/bundle.mjs) a dynamic import of
// node-llama-cpp, whose modules use top-level await, never settled.
type NodeLlamaCpp = typeof nodeLlamaCpp;

class LlamaLoadedModel implements LoadedModel {
  private readonly inflight = new Set<{ abort: AbortController; done: Promise<unknown> }>();
  private disposing: Promise<void> | null = null;
  /** An in-process engine cannot end by itself: if llama.cpp dies, so does the process that would report it. */
  readonly lost = new Promise<KekahydeError>(() => {});
  /**
   * The context's sequences, one per parallel generation. Each is reused by the generations that follow, so
   * its evaluated prefix can be reused too; node-llama-cpp decodes the busy ones together in one batch.
   */
  private readonly freeSequences: LlamaContextSequence[] = [];

  private readonly jobs: ModelJobs;
  /** The chat wrapper node-llama-cpp resolves from the model's own template, resolved once. */
  private wrapper: ChatWrapper | null = null;
  /** With a draft model: each sequence's own draft sequence (it keeps that sequence's tokens between requests). */
  private readonly draftSequences = new Map<LlamaContextSequence, LlamaContextSequence>();

  constructor(
    readonly info: ModelInfo,
    private readonly lib: NodeLlamaCpp,
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    vocabularySize: number,
    /** Speculative decoding: a draft model and its context (as many sequences as the model's), or prompt lookup. */
    private readonly speculation: { mode: "draft"; model: LlamaModel; context: LlamaContext } | { mode: "lookup" } | null = null,
  ) {
    for (let i = 0; i < context.totalSequences; i++) {
      const sequence = context.getSequence();
      this.freeSequences.push(sequence);
      if (speculation?.mode === "draft") this.draftSequences.set(sequence, speculation.context.getSequence());
    }
    this.jobs = new ModelJobs(model, info.threads, info.context_size, vocabularySize);
  }

  embed(request: EmbedRequest, { signal }: JobOptions): Promise<EmbedResult> {
    return this.jobs.embed(request, signal);
  }

  rank(request: RankRequest, { signal }: JobOptions): Promise<RankResult> {
    return this.jobs.rank(request, signal);
  }

  // The executor runs at once; a refusal it throws (a token out of the vocabulary) becomes the rejection.
  tokenize(request: TokenizeRequest): Promise<TokenizeResult> {
    return new Promise((resolve) => resolve(this.jobs.tokenize(request)));
  }

  detokenize(request: DetokenizeRequest): Promise<DetokenizeResult> {
    return new Promise((resolve) => resolve(this.jobs.detokenize(request)));
  }

  generate(options: GenerateOptions): Promise<GenerateResult> {
    if (this.disposing) return Promise.reject(new KekahydeError("NO_MODEL", "The model has been unloaded."));
    if (this.freeSequences.length === 0) return Promise.reject(new KekahydeError("BUSY", `All ${this.info.parallel} sequences of this model are generating.`));
    let prompt: PreparedPrompt;
    try {
      prompt = this.prepare(options);
    } catch (e) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- prepare() throws KekahydeErrors (and node-llama-cpp's Errors): passed on as they are
      return Promise.reject(e);
    }
    const sequence = this.takeSequence(prompt.tokens);
    // Our own controller, so that dispose() can end a generation it did not start.
    const abort = new AbortController();
    const forward = () => abort.abort();
    options.signal.addEventListener("abort", forward, { once: true });
    if (options.signal.aborted) abort.abort();
    const done = this.run({ ...options, signal: abort.signal }, prompt, sequence).finally(() => {
      options.signal.removeEventListener("abort", forward);
      this.inflight.delete(entry);
      this.freeSequences.push(sequence);
    });
    const entry = { abort, done: done.catch(() => {}) };
    this.inflight.add(entry);
    return done;
  }

  /**
   * The prompt cache: the free sequence whose evaluated tokens share the longest prefix with the prompt, so
   * that a conversation's next turn finds its earlier turns there. As llama-server's slot similarity: when
   * that prefix is no more than half the prompt, the least recently used sequence is taken instead (free
   * sequences are kept in the order they were freed), so an unrelated prompt does not evict a conversation.
   */
  private takeSequence(prompt: readonly Token[]): LlamaContextSequence {
    let best = 0;
    let bestShared = -1;
    this.freeSequences.forEach((sequence, i) => {
      const shared = commonPrefix(sequence.contextTokens, prompt);
      if (shared > bestShared) [best, bestShared] = [i, shared];
    });
    if (bestShared * 2 <= prompt.length) best = 0;
    return this.freeSequences.splice(best, 1)[0];
  }

  /**
   * The prompt's tokens as the engine will evaluate them: a raw prompt after the model's beginning token (as
   * llama.cpp's tokenizer adds it), or the conversation rendered by the model's chat template, with the
   * template's end-of-turn markers. With `truncate`, the oldest turns go until the prompt fits.
   */
  private prepare(request: GenerateOptions): PreparedPrompt {
    const contextSize = this.context.contextSize;
    if (request.raw) {
      const bos = this.model.tokens.shouldPrependBosToken ? this.model.tokens.bos : null;
      const tokens = bos != null ? [bos, ...this.model.tokenize(request.prompt, false, "trimLeadingSpace")] : this.model.tokenize(request.prompt);
      return this.fitting({ tokens, history: null, functions: undefined, stopTokens: [], stopStrings: [], ignoreStart: [], truncatedMessages: 0 }, contextSize);
    }
    const functions = this.functionsFor(request);
    const wrapper = this.chatWrapper();
    const render = (dropped: number) => {
      const messages = request.messages && dropOldestTurns(request.messages, dropped);
      const history = this.chatHistory({ ...request, ...(messages && { messages }) });
      const state = renderTemplate(() => wrapper.generateContextState({ chatHistory: history, availableFunctions: functions }));
      return { history, state, tokens: state.contextText.tokenize(this.model.tokenizer) };
    };
    const truncating = request.truncate === true && request.messages !== undefined;
    const { dropped, rendered } = truncating
      ? fewestDropsThatFit({
          most: droppableCount(request.messages!),
          atLeast: leastTurnsToDrop(request.messages!, contextSize, (text) => this.model.tokenize(text, false).length),
          render,
          fits: (r) => r.tokens.length < contextSize,
        })
      : { dropped: 0, rendered: render(0) };
    const { history, state, tokens } = rendered;
    const stopTokens = state.stopGenerationTriggers.map((trigger) => trigger.tokenize(this.model.tokenizer, "trimLeadingSpace"));
    // A trigger written as plain text may come out in other tokens than its own: it also stops as a string.
    const stopStrings = state.stopGenerationTriggers.filter((t) => t.values.every((v) => typeof v === "string")).map((t) => t.toString());
    const ignoreStart = (state.ignoreStartText ?? []).map((t) => t.toString());
    return this.fitting({ tokens, history, functions, stopTokens, stopStrings, ignoreStart, truncatedMessages: dropped }, contextSize);
  }

  private fitting(prompt: PreparedPrompt, contextSize: number): PreparedPrompt {
    const n = prompt.tokens.length;
    if (n < contextSize) return prompt;
    throw new KekahydeError(
      "PROMPT_TOO_LONG",
      `The prompt is ${n} tokens but the context holds ${contextSize}. Shorten the prompt, load the model with a larger context_size, or (for a conversation) send "truncate": true to drop its oldest turns.`,
      { prompt_tokens: n, context_size: contextSize },
    );
  }

  private chatWrapper(): ChatWrapper {
    return (this.wrapper ??= this.lib.resolveChatWrapper(this.model));
  }

  /**
   * Tools are offered to models whose chat template renders them (the catalogue's rule, so that what /api/show
   * and /v1/models claim is what works). The call syntax is the chat wrapper's: node-llama-cpp's own for the
   * model families it knows, else the one it reads from the Jinja template, else its generic one.
   */
  private checkTools(): void {
    const template = this.model.fileInfo.metadata?.tokenizer?.chat_template;
    if (!templateSupportsTools(typeof template === "string" ? template : null)) {
      throw new KekahydeError(
        "NOT_SUPPORTED",
        'This model cannot call tools: its chat template has no tool syntax (it never renders "tools"). Use a model whose template does (GET /api/show and GET /v1/models list "tools" among its capabilities), or send the request without tools.',
        { field: "tools" },
      );
    }
  }

  /**
   * The conversation as node-llama-cpp's history. An assistant message's tool calls become function calls
   * with their results (the "tool" messages that answer them, by id); consecutive assistant messages, with
   * the results between them, are one model turn, as node-llama-cpp keeps a turn that called functions.
   */
  private chatHistory(request: GenerateOptions): ChatHistoryItem[] {
    const history: ChatHistoryItem[] = [];
    if (!request.messages) {
      if (request.system) history.push({ type: "system", text: request.system });
      history.push({ type: "user", text: request.prompt });
      history.push({ type: "model", response: [] });
      return history;
    }
    const results = new Map(request.messages.filter((m) => m.role === "tool").map((m) => [m.toolCallId, m.content]));
    for (const m of request.messages) {
      if (m.role === "system") history.push({ type: "system", text: m.content });
      else if (m.role === "user") history.push({ type: "user", text: m.content });
      else if (m.role === "assistant") {
        let turn = history.at(-1);
        if (turn?.type !== "model") history.push((turn = { type: "model", response: [] }));
        const response: ChatModelResponse["response"] = turn.response;
        if (m.content !== "") {
          const last = response.at(-1);
          if (typeof last === "string") response[response.length - 1] = last + m.content;
          else response.push(m.content);
        }
        (m.toolCalls ?? []).forEach((call, i) =>
          response.push({
            type: "functionCall",
            name: call.name,
            params: parsedOrText(call.arguments),
            result: parsedOrText(results.get(call.id) ?? ""),
            ...(i === 0 && { startsNewChunk: true }),
          }),
        );
      }
    }
    // After an assistant message the reply continues it; after tool results the assistant's turn goes on.
    const last: ChatMessage["role"] = request.messages.at(-1)!.role;
    if (last !== "assistant" && last !== "tool") history.push({ type: "model", response: [] });
    return history;
  }

  /** node-llama-cpp's functions for the request's tools: the named one only when the request names one. */
  private functionsFor(request: GenerateOptions): ChatModelFunctions | undefined {
    const choice = request.toolChoice ?? "auto";
    let tools: ToolDefinition[] = request.tools ?? [];
    if (typeof choice === "object") tools = tools.filter((t) => t.name === choice.name);
    if (tools.length === 0) return undefined;
    this.checkTools();
    return Object.fromEntries(
      tools.map((t) => [t.name, { ...(t.description !== undefined && { description: t.description }), ...(t.parameters !== undefined && { params: toGrammarSchema(t.parameters) as never }) }]),
    );
  }

  /** What drafts for a generation on `sequence`: its draft sequence, prompt lookup, or nothing. */
  private draftFor(sequence: LlamaContextSequence): DraftOptions | null {
    const s = this.speculation;
    if (s?.mode === "draft") return { kind: "model", model: s.model, sequence: this.draftSequences.get(sequence)! };
    if (s?.mode === "lookup") return { kind: "lookup" };
    return null;
  }

  private async run(request: GenerateOptions, prompt: PreparedPrompt, sequence: LlamaContextSequence): Promise<GenerateResult> {
    const { signal } = request;
    const started = performance.now();
    const promptTokens = prompt.tokens.length;
    const room = this.context.contextSize - promptTokens;
    const maxTokens = request.maxTokens === undefined ? room : Math.min(request.maxTokens, room);
    let completionTokens = 0;
    let firstTokenMs: number | null = null;
    const report = () => request.onProgress?.({ promptTokens, completionTokens, firstTokenMs });
    const counted = (n: number) => {
      if (firstTokenMs === null) firstTokenMs = performance.now() - started;
      completionTokens = n;
      report();
    };
    report(); // the prompt's length, before the first token
    const ended = (r: {
      text: string;
      finishReason: FinishReason;
      cachedTokens: number;
      toolCalls?: ToolCall[];
      logprobs?: TokenLogprob[];
      speculation?: { draftedTokens: number; acceptedTokens: number };
    }): GenerateResult => ({
      text: r.text,
      ...(r.toolCalls && r.toolCalls.length > 0 && { toolCalls: r.toolCalls }),
      finishReason: signal.aborted ? "cancelled" : r.finishReason,
      promptTokens,
      cachedTokens: r.cachedTokens,
      completionTokens,
      ...(r.logprobs && { logprobs: r.logprobs }),
      ...(r.speculation && { draftTokens: r.speculation.draftedTokens, acceptedDraftTokens: r.speculation.acceptedTokens }),
      ...(prompt.truncatedMessages > 0 && { truncatedMessages: prompt.truncatedMessages }),
      durationMs: performance.now() - started,
      firstTokenMs,
    });
    // The request side refuses a format together with tools: node-llama-cpp takes a grammar or functions.
    const grammar = prompt.functions ? undefined : await this.grammarFor(request);
    try {
      if (prompt.functions) return ended(await this.callingTools(request, prompt, sequence, maxTokens, counted));
      // Greedy requests without a grammar speculate when the model has a draft (or prompt lookup); the others
      // take the plain loop inside runSpeculativeLoop.
      const draft = this.draftFor(sequence);
      const sampling = { ...SAMPLING_DEFAULTS, ...request.sampling };
      const speculating = speculates({ draft, sampling, grammar });
      const r = await runSpeculativeLoop({
        draft: speculating ? draft : null,
        model: this.model,
        sequence,
        prompt: prompt.tokens,
        maxTokens,
        stopTokens: prompt.stopTokens,
        stopStrings: [...prompt.stopStrings, ...(request.stop ?? [])],
        ignoreStart: prompt.ignoreStart,
        sampling,
        grammar,
        logprobs: request.logprobs ?? null,
        signal,
        onText: request.onText,
        onToken: counted,
      });
      return ended({
        text: r.text,
        finishReason: LOOP_FINISH[r.stopReason],
        cachedTokens: r.cachedTokens,
        logprobs: r.logprobs,
        ...(speculating && { speculation: { draftedTokens: r.draftedTokens, acceptedTokens: r.acceptedTokens } }),
      });
    } catch (e) {
      if (!signal.aborted) throw failureOf(e);
      return ended({ text: "", finishReason: "cancelled", cachedTokens: 0 });
    }
  }

  /**
   * The grammar a request's format asks for. A schema that llama.cpp's grammar parser refuses is the
   * request's fault (the request side refuses what it knows cannot compile: src/server/jsonSchema.ts), so it
   * is a 400 naming the field, not an engine failure.
   */
  private async grammarFor(request: GenerateOptions) {
    if (request.json && !request.jsonSchema) return this.llama.getGrammarFor("json");
    if (!request.jsonSchema) return undefined;
    try {
      return await this.llama.createGrammarForJsonSchema(toGrammarSchema(request.jsonSchema) as never);
    } catch (e) {
      const said = e instanceof Error ? e.message : String(e);
      throw new KekahydeError("BAD_REQUEST", `The JSON schema of the requested format could not be made into a grammar: ${said}. Simplify the schema.`, { field: "format", reason: "grammar" });
    }
  }

  /**
   * A generation that may call tools goes through node-llama-cpp's LlamaChat: its chat wrapper knows the
   * template's call syntax, spots calls and holds their arguments to their schema.
   */
  private async callingTools(
    request: GenerateOptions,
    prompt: PreparedPrompt,
    sequence: LlamaContextSequence,
    maxTokens: number,
    counted: (n: number) => void,
  ): Promise<{ text: string; finishReason: FinishReason; cachedTokens: number; toolCalls: ToolCall[] }> {
    const mustCall = (request.toolChoice ?? "auto") !== "auto";
    const wrapper = this.chatWrapper();
    // LlamaChat keeps the sequence's shared prefix as well.
    const cachedTokens = Math.min(commonPrefix(sequence.contextTokens, prompt.tokens), prompt.tokens.length - 1);
    const chat = new this.lib.LlamaChat({ contextSequence: sequence, autoDisposeSequence: false, chatWrapper: mustCall ? callingWrapper(wrapper) : wrapper });
    // LlamaChat's maxTokens does not bound the tokens of a function call: our own count ends the generation,
    // so a call that never ends cannot run into the end of the context.
    const budget = new AbortController();
    const stopWithRequest = () => budget.abort();
    request.signal.addEventListener("abort", stopWithRequest, { once: true });
    if (request.signal.aborted) budget.abort();
    let overBudget = false;
    let written = "";
    try {
      const outputBefore = sequence.tokenMeter.usedOutputTokens;
      let n = 0;
      const onToken = (tokens: readonly unknown[]) => {
        counted((n += tokens.length));
        if (n >= maxTokens && !budget.signal.aborted) {
          overBudget = true;
          budget.abort();
        }
      };
      const r = await chat.generateResponse(prompt.history!, {
        ...samplingFor(request),
        maxTokens,
        signal: budget.signal,
        stopOnAbortSignal: true,
        customStopTriggers: request.stop?.length ? request.stop : undefined,
        onToken,
        onTextChunk: (text) => {
          written += text;
          request.onText?.(text);
        },
        functions: prompt.functions,
        documentFunctionParams: true,
        maxParallelFunctionCalls: request.parallelToolCalls === false ? 1 : undefined,
        // The tokens of a function call reach no onToken; its arguments arrive a token or so per chunk.
        onFunctionCallParamsChunk: ({ paramsChunk }) => paramsChunk !== "" && onToken([paramsChunk]),
      });
      // Every token the model wrote, its calls' included.
      counted(Math.max(n, sequence.tokenMeter.usedOutputTokens - outputBefore));
      const toolCalls = (r.functionCalls ?? []).map((c) => ({ id: newCallId(), name: c.functionName, arguments: JSON.stringify(c.params ?? {}) }));
      const finishReason: FinishReason = overBudget ? "length" : toolCalls.length > 0 ? "tool_calls" : (STOP_REASONS[r.metadata.stopReason] ?? "stop");
      return { text: r.response, finishReason, cachedTokens, toolCalls };
    } catch (e) {
      // The context filled before the budget did (the count of a call's tokens is approximate): the answer
      // so far, as any generation that reaches the end of its context.
      if (!/context shift/i.test(e instanceof Error ? e.message : String(e))) throw e;
      return { text: written, finishReason: "length", cachedTokens, toolCalls: [] };
    } finally {
      request.signal.removeEventListener("abort", stopWithRequest);
      chat.dispose();
    }
  }

  /**
   * One token through the whole graph before the first request, as llama-server does at start-up: the first
   * evaluation allocates compute buffers and touches the weights, which would otherwise land on the first
   * user's time to first token (measured: 77 ms against 30 on the 110M benchmark model).
   */
  async warmUp(): Promise<void> {
    const completion = new this.lib.LlamaCompletion({ contextSequence: this.freeSequences[0], autoDisposeSequence: false });
    try {
      await completion.generateCompletion("a", { maxTokens: 1, temperature: 0 });
    } catch {
      // A model that cannot generate fails its first real request with a proper error instead.
    } finally {
      completion.dispose();
    }
  }

  /** Idempotent; ends a running generation first, because freeing a context under it would crash llama.cpp. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      for (const { abort } of this.inflight) abort.abort();
      await Promise.all([...this.inflight].map((g) => g.done));
      await this.jobs.dispose();
      await this.context.dispose();
      await this.model.dispose();
      if (this.speculation?.mode === "draft") {
        await this.speculation.context.dispose();
        await this.speculation.model.dispose();
      }
    })();
    return this.disposing;
  }
}

/** node-llama-cpp's flash attention option, as a context holds it, in the daemon's words. */
const flashAttentionMode = (option: boolean | "auto"): FlashAttentionMode => (option === "auto" ? "auto" : option ? "on" : "off");

/** The in-process engine, and what an engine process asks of it beyond the port. */
export interface LlamaEngine extends Engine {
  /** Starts the library (if not yet) and says what it runs on. */
  probe(): Promise<{ gpu: string | false; vramFree: number | null }>;
  /** Has node-llama-cpp's GGUF parser compiled before the first load (loaderWarmUp.ts); never fails. */
  warmUpLoader(signal: AbortSignal): Promise<void>;
}

/**
 * The node-llama-cpp engine, in the process that calls it: prebuilt binaries only; it never downloads or
 * compiles anything at run time. The daemon runs it inside engine processes (src/engine/process/), never
 * in its own.
 */
export function createLlamaEngine(options: LlamaEngineOptions): LlamaEngine {
  let llama: Promise<Llama> | null = null;
  const policy = { allowedDirs: options.modelsDirs ?? [] };
  const availableMemory = options.availableMemory ?? (async () => (await si.mem()).available);

  const library = (): Promise<Llama> =>
    (llama ??= nodeLlamaCpp.getLlama({
      gpu: options.gpu === "off" ? false : "auto",
      build: "never",
      // A local build made by `npm run build:engine` is preferred when there is one; node-llama-cpp finds it
      // by these options. Without one, the prebuilt binary is used.
      cmakeOptions: sourceBuildOptions().cmake,
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      maxThreads: options.threads,
      logLevel: nodeLlamaCpp.LlamaLogLevel.warn,
      logger: (level, message) => options.onNativeLog?.(String(level), message.trim()),
    }).catch((e) => {
      llama = null;
      throw toKekahydeError(e, "ENGINE_FAILURE", "could not start the llama.cpp engine");
    }));

  return {
    async probe() {
      const lib = await library();
      return { gpu: lib.gpu, vramFree: lib.gpu === false ? null : (await lib.getVramState()).free };
    },

    async warmUpLoader(signal) {
      // Only time is at stake: a folder that cannot be written or a parse that fails leaves the first load as it was.
      await warmUpGgufParser((path, s) => nodeLlamaCpp.readGgufFileInfo(path, { sourceType: "filesystem", signal: s }), signal).catch(() => {});
    },

    plan(rawPath, settings) {
      return planModel(rawPath, settings, {
        policy,
        contextSize: options.contextSize,
        parallel: options.parallel,
        // Layers go to a GPU when the library found one and the load does not ask for none.
        onGpu: async (s) => options.gpu !== "off" && s.gpuLayers !== 0 && (await library()).gpu !== false,
        freeBytes: async (onGpu) => (onGpu ? (await (await library()).getVramState()).free : availableMemory()),
      });
    },

    async load(plan, { signal, onProgress }) {
      const lib = await library();
      const { path } = plan;
      const threads = plan.threads ?? options.threads;
      // node-llama-cpp's booleans, or llama.cpp's own "auto": on where the backend supports it (CPU, CUDA, Metal).
      const flashAttention = { auto: "auto" as const, on: true, off: false }[options.flashAttention ?? "auto"];
      let model: LlamaModel;
      try {
        model = await lib.loadModel({ modelPath: path, loadSignal: signal, onLoadProgress: onProgress, gpuLayers: plan.gpuLayers ?? "auto" });
      } catch (e) {
        if (signal.aborted) throw new KekahydeError("MODEL_INVALID", `loading ${path} was cancelled`, { path });
        throw toKekahydeError(e, "MODEL_INVALID", `${path} could not be loaded by llama.cpp`);
      }
      let context: LlamaContext;
      try {
        context = await model.createContext({ contextSize: plan.contextSize, sequences: plan.sequences, threads: { ideal: threads, min: threads }, flashAttention });
      } catch (e) {
        await model.dispose();
        throw toKekahydeError(e, "MODEL_INVALID", `could not create a ${plan.contextSize}-token context for ${path}`);
      }
      let speculation: ConstructorParameters<typeof LlamaLoadedModel>[6] = plan.speculative === "lookup" ? { mode: "lookup" } : null;
      if (plan.draft) {
        const draftPath = plan.draft.path;
        let draftModel: LlamaModel | null = null;
        try {
          draftModel = await lib.loadModel({ modelPath: draftPath, loadSignal: signal, gpuLayers: plan.gpuLayers === 0 ? 0 : "auto" });
          const draftContext = await draftModel.createContext({ contextSize: plan.draft.contextSize, sequences: plan.sequences, threads: { ideal: threads, min: threads }, flashAttention });
          speculation = { mode: "draft", model: draftModel, context: draftContext };
        } catch (e) {
          await draftModel?.dispose();
          await context.dispose();
          await model.dispose();
          if (signal.aborted) throw new KekahydeError("MODEL_INVALID", `loading ${path} was cancelled`, { path });
          throw toKekahydeError(e, "MODEL_INVALID", `the draft model ${draftPath} could not be loaded by llama.cpp`);
        }
      }
      const info: ModelInfo = {
        path,
        name: plan.name ?? defaultModelName(path),
        architecture: plan.architecture,
        size_bytes: plan.fileSize,
        context_size: context.contextSize,
        train_context_size: plan.trainContextSize,
        threads,
        gpu: lib.gpu,
        gpu_layers: model.gpuLayers,
        engine_build: lib.buildType,
        flash_attention: flashAttentionMode(context.flashAttention),
        engine_pid: process.pid,
        parallel: context.totalSequences,
        ...(plan.speculative && { speculative: plan.speculative }),
        ...(plan.draft && { draft_model: { path: plan.draft.path, name: plan.draft.name ?? defaultModelName(plan.draft.path), size_bytes: plan.draft.fileSize } }),
      };
      const loaded = new LlamaLoadedModel(info, nodeLlamaCpp, lib, model, context, plan.vocabularySize, speculation);
      await loaded.warmUp();
      return loaded;
    },

    async dispose() {
      if (!llama) return;
      const lib = await llama.catch(() => null);
      llama = null;
      await lib?.dispose();
    },
  };
}
