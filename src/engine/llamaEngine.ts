import { randomBytes } from "node:crypto";
import type { ChatHistoryItem, ChatModelFunctions, ChatModelResponse, ChatWrapper, Llama, LlamaContext, LlamaContextSequence, LlamaModel } from "node-llama-cpp";
import { templateSupportsTools } from "../catalogue/facts.ts";
import { KekahydeError, toKekahydeError } from "../errors.ts";
import si from "systeminformation";
import { SAMPLING_DEFAULTS } from "../domain/defaults.ts";
import type { ChatMessage, FinishReason, GenerateResult, ToolCall, ToolDefinition } from "../domain/generation.ts";
import { defaultModelName, type GpuMode, type ModelInfo } from "../domain/models.ts";
import { toGrammarSchema } from "./jsonSchema.ts";
import { planModel } from "./planning.ts";
import { sourceBuildOptions } from "./sourceBuild.ts";
import type { DetokenizeRequest, DetokenizeResult, EmbedRequest, EmbedResult, RankRequest, RankResult, TokenizeRequest, TokenizeResult } from "../domain/jobs.ts";
import { ModelJobs } from "./modelJobs.ts";
import type { Engine, GenerateOptions, JobOptions, LoadedModel } from "./types.ts";

export interface LlamaEngineOptions {
  gpu: GpuMode;
  threads: number;
  /** Context size for each loaded model; bounded by the model's trained context length. */
  contextSize: number;
  /** Context sequences per model, for parallel generations (default 1). */
  parallel?: number;
  /** Folders models may be loaded from; empty: anywhere. */
  modelsDirs?: readonly string[];
  /** Bytes of memory available for a new model; defaults to the machine's available memory. */
  availableMemory?: () => Promise<number>;
  /** Receives llama.cpp's own log lines (warnings and errors). */
  onNativeLog?: (level: string, message: string) => void;
}

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
  const forced: ChatWrapper = Object.create(wrapper);
  forced.generateContextState = (options) => {
    // Triggers that would let the model choose what to write first (a thought, a channel) do not apply.
    const { prefixTriggers: _p, noPrefixTrigger: _n, detectFunctionCalls: _d, rerender: _r, ...state } = wrapper.generateContextState(options);
    return { ...state, functionCall: { initiallyEngaged: true, disengageInitiallyEngaged: [] } };
  };
  return forced;
}

/**
 * node-llama-cpp is imported on the first load, not at start-up: its module graph alone is ~45 MB of RSS,
 * which an idle daemon without a model should not carry.
 */
type NodeLlamaCpp = typeof import("node-llama-cpp");
let nodeLlamaCpp: Promise<NodeLlamaCpp> | null = null;
const binding = (): Promise<NodeLlamaCpp> => (nodeLlamaCpp ??= import("node-llama-cpp"));

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

  constructor(
    readonly info: ModelInfo,
    private readonly lib: NodeLlamaCpp,
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    vocabularySize: number,
  ) {
    for (let i = 0; i < context.totalSequences; i++) this.freeSequences.push(context.getSequence());
    this.jobs = new ModelJobs(model, info.threads, info.context_size, vocabularySize);
  }

  embed(request: EmbedRequest, { signal }: JobOptions): Promise<EmbedResult> {
    return this.jobs.embed(request, signal);
  }

  rank(request: RankRequest, { signal }: JobOptions): Promise<RankResult> {
    return this.jobs.rank(request, signal);
  }

  async tokenize(request: TokenizeRequest): Promise<TokenizeResult> {
    return this.jobs.tokenize(request);
  }

  async detokenize(request: DetokenizeRequest): Promise<DetokenizeResult> {
    return this.jobs.detokenize(request);
  }

  generate(options: GenerateOptions): Promise<GenerateResult> {
    if (this.disposing) return Promise.reject(new KekahydeError("NO_MODEL", "The model has been unloaded."));
    const sequence = this.freeSequences.shift();
    if (!sequence) return Promise.reject(new KekahydeError("BUSY", `All ${this.info.parallel} sequences of this model are generating.`));
    // Our own controller, so that dispose() can end a generation it did not start.
    const abort = new AbortController();
    const forward = () => abort.abort();
    options.signal.addEventListener("abort", forward, { once: true });
    if (options.signal.aborted) abort.abort();
    const done = this.run({ ...options, signal: abort.signal }, sequence).finally(() => {
      options.signal.removeEventListener("abort", forward);
      this.inflight.delete(entry);
      this.freeSequences.push(sequence);
    });
    const entry = { abort, done: done.catch(() => {}) };
    this.inflight.add(entry);
    return done;
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
          if (typeof response.at(-1) === "string") response[response.length - 1] += m.content;
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

  private async run(request: GenerateOptions, sequence: LlamaContextSequence): Promise<GenerateResult> {
    const { signal } = request;
    const started = performance.now();
    const functions = request.raw ? undefined : this.functionsFor(request);
    const mustCall = functions !== undefined && (request.toolChoice ?? "auto") !== "auto";
    const wrapper = request.raw ? null : this.chatWrapper();
    const chat = wrapper ? new this.lib.LlamaChat({ contextSequence: sequence, autoDisposeSequence: false, chatWrapper: mustCall ? callingWrapper(wrapper) : wrapper }) : null;
    const completion = request.raw ? new this.lib.LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false }) : null;
    try {
      const history = this.chatHistory(request);
      const promptTokens = wrapper
        ? wrapper.generateContextState({ chatHistory: history, availableFunctions: functions }).contextText.tokenize(this.model.tokenizer).length
        : this.model.tokenize(request.prompt).length + (this.model.tokens.bos != null ? 1 : 0);
      const contextSize = this.context.contextSize;
      if (promptTokens >= contextSize) {
        throw new KekahydeError(
          "PROMPT_TOO_LONG",
          `The prompt is ${promptTokens} tokens but the context holds ${contextSize}. Shorten the prompt or load the model with a larger context_size.`,
          { prompt_tokens: promptTokens, context_size: contextSize },
        );
      }
      const room = contextSize - promptTokens;
      // The request side refuses a format together with tools: node-llama-cpp takes a grammar or functions.
      const grammar = functions
        ? undefined
        : request.jsonSchema
          ? await this.llama.createGrammarForJsonSchema(toGrammarSchema(request.jsonSchema) as never)
          : request.json
            ? await this.llama.getGrammarFor("json")
            : undefined;
      let completionTokens = 0;
      let firstTokenMs: number | null = null;
      const report = () => request.onProgress?.({ promptTokens, completionTokens, firstTokenMs });
      const onToken = (tokens: readonly unknown[]) => {
        if (firstTokenMs === null) firstTokenMs = performance.now() - started;
        completionTokens += tokens.length;
        report();
      };
      // The tokens of a function call reach no onToken; its arguments arrive a token or so per chunk.
      const onFunctionCallParamsChunk = ({ paramsChunk }: { paramsChunk: string }) => paramsChunk !== "" && onToken([paramsChunk]);
      const outputBefore = sequence.tokenMeter.usedOutputTokens;
      report(); // the prompt's length, before the first token
      const common = {
        ...samplingFor(request),
        maxTokens: request.maxTokens === undefined ? room : Math.min(request.maxTokens, room),
        signal,
        stopOnAbortSignal: true,
        customStopTriggers: request.stop?.length ? request.stop : undefined,
        grammar,
        onToken,
        onTextChunk: request.onText,
      };
      let text: string;
      let stopReason: string;
      let toolCalls: ToolCall[] = [];
      try {
        if (chat && functions) {
          const { grammar: _none, ...options } = common;
          const r = await chat.generateResponse(history, {
            ...options,
            functions,
            documentFunctionParams: true,
            maxParallelFunctionCalls: request.parallelToolCalls === false ? 1 : undefined,
            onFunctionCallParamsChunk,
          });
          [text, stopReason] = [r.response, r.metadata.stopReason];
          toolCalls = (r.functionCalls ?? []).map((c) => ({ id: newCallId(), name: c.functionName, arguments: JSON.stringify(c.params ?? {}) }));
          // Every token the model wrote, its calls' included.
          completionTokens = Math.max(completionTokens, sequence.tokenMeter.usedOutputTokens - outputBefore);
        } else if (chat) {
          const r = await chat.generateResponse(history, common);
          [text, stopReason] = [r.response, r.metadata.stopReason];
        } else {
          const r = await completion!.generateCompletionWithMeta(request.prompt, common);
          [text, stopReason] = [r.response, r.metadata.stopReason];
        }
      } catch (e) {
        if (!signal.aborted) throw toKekahydeError(e, "ENGINE_FAILURE", "generation failed in the engine");
        [text, stopReason] = ["", "abort"];
      }
      const finishReason: FinishReason = signal.aborted ? "cancelled" : toolCalls.length > 0 ? "tool_calls" : (STOP_REASONS[stopReason] ?? "stop");
      return {
        text,
        ...(finishReason === "tool_calls" && { toolCalls }),
        finishReason,
        promptTokens,
        completionTokens,
        durationMs: performance.now() - started,
        firstTokenMs,
      };
    } finally {
      chat?.dispose();
      completion?.dispose();
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
    })();
    return this.disposing;
  }
}

/** The in-process engine, and what an engine process asks of it beyond the port. */
export interface LlamaEngine extends Engine {
  /** Starts the library (if not yet) and says what it runs on. */
  probe(): Promise<{ gpu: string | false; vramFree: number | null }>;
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
    (llama ??= binding().then(({ getLlama, LlamaLogLevel }) => getLlama({
      gpu: options.gpu === "off" ? false : "auto",
      build: "never",
      // A local build made by `npm run build:engine` is preferred when there is one; node-llama-cpp finds it
      // by these options. Without one, the prebuilt binary is used.
      cmakeOptions: sourceBuildOptions().cmake,
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => options.onNativeLog?.(String(level), message.trim()),
    })).catch((e) => {
      llama = null;
      throw toKekahydeError(e, "ENGINE_FAILURE", "could not start the llama.cpp engine");
    }));

  return {
    async probe() {
      const lib = await library();
      return { gpu: lib.gpu, vramFree: lib.gpu === false ? null : (await lib.getVramState()).free };
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
      let model: LlamaModel;
      try {
        model = await lib.loadModel({ modelPath: path, loadSignal: signal, onLoadProgress: onProgress, gpuLayers: plan.gpuLayers ?? "auto" });
      } catch (e) {
        if (signal.aborted) throw new KekahydeError("MODEL_INVALID", `loading ${path} was cancelled`, { path });
        throw toKekahydeError(e, "MODEL_INVALID", `${path} could not be loaded by llama.cpp`);
      }
      let context: LlamaContext;
      try {
        context = await model.createContext({ contextSize: plan.contextSize, sequences: plan.sequences, threads: { ideal: threads, min: threads } });
      } catch (e) {
        await model.dispose();
        throw toKekahydeError(e, "MODEL_INVALID", `could not create a ${plan.contextSize}-token context for ${path}`);
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
        engine_pid: process.pid,
        parallel: context.totalSequences,
      };
      const loaded = new LlamaLoadedModel(info, await binding(), lib, model, context, plan.vocabularySize);
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
