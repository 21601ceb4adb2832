import { GgmlType, TokenType } from "../../src/gguf/format.ts";
import { nextChar, type CharModelShape, TINY_CHAR_MODEL } from "../../src/gguf/charModel.ts";
import { baseVocabulary, llamaMetadata, SPACE_PIECE } from "../../src/gguf/llamaMetadata.ts";
import { str, u32, writeGguf, type GgufSpec, type GgufTensorSpec } from "../../src/gguf/writer.ts";

/**
 * Tool-capable variants of the char model (charModel.ts): the same one-hot llama whose greedy text is known
 * in advance (" abcdefgh…" as a chat reply), but carrying a real tool-capable chat template, verbatim, with
 * the special tokens that template uses as single tokens of its vocabulary. node-llama-cpp then resolves the
 * chat wrapper it resolves for the real models and runs its real function-calling path.
 *
 * The weights know one thing about tools: after "z" the model starts a tool call in its template's syntax
 * (the flavour's `callStart` tokens), so a reply of its own, " abc…xyz", ends in a call the model chose
 * ("auto"); shorter replies are text only. Where a call starts, node-llama-cpp's grammars decide what it says
 * (a name among the tools, arguments valid against their schema), as they do when a call is forced
 * (tool_choice "required" or a named function). After a call's closing token the model ends its turn.
 */

/**
 * Qwen 2.5's chat template (Qwen/Qwen2.5-7B-Instruct tokenizer_config.json), as llama.cpp keeps it in
 * models/templates/Qwen-Qwen2.5-7B-Instruct.jinja; the final newline is dropped, as Jinja drops it.
 */
const QWEN25_TEMPLATE = String.raw`{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}`;

/**
 * Llama 3.1's chat template (meta-llama/Llama-3.1-8B-Instruct), as llama.cpp keeps it in
 * models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja; the final newline is dropped, as Jinja drops it.
 */
const LLAMA31_TEMPLATE = String.raw`{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}`;

interface Special {
  piece: string;
  type: TokenType.CONTROL | TokenType.USER_DEFINED;
}

export interface ToolTemplateFlavour {
  /** general.name: also what node-llama-cpp ranks chat wrappers by. */
  name: string;
  template: string;
  /** The template's special tokens, each one token of the vocabulary (ids 3, 4, …). */
  specials: readonly Special[];
  /** The end-of-turn token (tokenizer.ggml.eot_token_id). */
  endOfTurn: string;
  /** Tokens whose greedy successor is the end of the turn instead of a space (a tool call's closing token). */
  endsTurnAfter: readonly string[];
  /**
   * How the model starts a tool call of its own, after "z": pieces written one token each (the template's
   * call prefix; pieces that are not specials join the vocabulary as added tokens).
   */
  callStart: readonly string[];
  bos?: string;
}

/** Qwen 2.5: ChatML turns, `<tool_call>` … `</tool_call>` (added tokens, not control ones, as in Qwen's vocabulary). */
export const QWEN25_FLAVOUR: ToolTemplateFlavour = {
  name: "kekahyde-tools-qwen2.5",
  template: QWEN25_TEMPLATE,
  specials: [
    { piece: "<|endoftext|>", type: TokenType.CONTROL },
    { piece: "<|im_start|>", type: TokenType.CONTROL },
    { piece: "<|im_end|>", type: TokenType.CONTROL },
    { piece: "<tool_call>", type: TokenType.USER_DEFINED },
    { piece: "</tool_call>", type: TokenType.USER_DEFINED },
  ],
  endOfTurn: "<|im_end|>",
  endsTurnAfter: ["</tool_call>"],
  callStart: ["<tool_call>", '\n{"name": "'],
};

/** Llama 3.1: header tokens, `<|eot_id|>` ends a turn, `<|eom_id|>` a tool call, `<|python_tag|>`. */
export const LLAMA31_FLAVOUR: ToolTemplateFlavour = {
  name: "kekahyde-tools-llama3.1",
  template: LLAMA31_TEMPLATE,
  specials: [
    { piece: "<|begin_of_text|>", type: TokenType.CONTROL },
    { piece: "<|start_header_id|>", type: TokenType.CONTROL },
    { piece: "<|end_header_id|>", type: TokenType.CONTROL },
    { piece: "<|eot_id|>", type: TokenType.CONTROL },
    { piece: "<|eom_id|>", type: TokenType.CONTROL },
    { piece: "<|python_tag|>", type: TokenType.CONTROL },
  ],
  endOfTurn: "<|eot_id|>",
  endsTurnAfter: ["<|eom_id|>"],
  callStart: ["<function="],
  bos: "<|begin_of_text|>",
};

interface ToolVocab {
  tokens: string[];
  types: number[];
  /** The greedy successor of each token id. */
  next: number[];
}

const EOS = 2;

function buildToolVocab(flavour: ToolTemplateFlavour): ToolVocab {
  const added: Special[] = flavour.callStart.filter((p) => !flavour.specials.some((s) => s.piece === p)).map((piece) => ({ piece, type: TokenType.USER_DEFINED }));
  const specials = [...flavour.specials, ...added];
  const { tokens, types } = baseVocabulary(specials.map((s) => s.piece));
  specials.forEach((s, i) => (types[3 + i] = s.type));
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const spaceId = idOf.get(SPACE_PIECE)!;
  const endOfTurn = idOf.get(flavour.endOfTurn)!;
  const next = tokens.map((piece, id) => {
    if (flavour.endsTurnAfter.includes(piece)) return endOfTurn;
    if (piece === "z") return idOf.get(flavour.callStart[0])!;
    const inCall = flavour.callStart.indexOf(piece);
    if (inCall >= 0 && inCall + 1 < flavour.callStart.length) return idOf.get(flavour.callStart[inCall + 1])!;
    // Control, added and byte pieces come before the space piece; the model answers them with a space.
    if (id < spaceId) return spaceId;
    const succ = nextChar(piece === SPACE_PIECE ? " " : piece);
    if (succ === null) return EOS;
    return idOf.get(succ === " " ? SPACE_PIECE : succ)!;
  });
  return { tokens, types, next };
}

/** The tiny char model's shape (~1 MB, exact text); the vocabulary is a few tokens larger. */
const TOOL_MODEL_SHAPE: CharModelShape = { ...TINY_CHAR_MODEL, name: "kekahyde-tools" };

const CHUNK = 1 << 20;

function* zeroBytes(total: number): Iterable<Uint8Array> {
  const chunk = new Uint8Array(Math.min(CHUNK, total));
  for (let left = total; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

function* f32Rows(rows: number, rowLength: number, fill: (row: number, out: Float32Array) => void): Iterable<Uint8Array> {
  const out = new Float32Array(rowLength);
  for (let r = 0; r < rows; r++) {
    out.fill(0);
    fill(r, out);
    yield new Uint8Array(out.buffer.slice(0));
  }
}

const ones = (n: number) => () => [new Uint8Array(new Float32Array(n).fill(1).buffer)];

function zeroTensor(name: string, dims: number[], type: GgmlType.F32 | GgmlType.F16): GgufTensorSpec {
  const bytes = dims.reduce((a, b) => a * b, 1) * (type === GgmlType.F32 ? 4 : 2);
  return { name, dims, type, data: () => zeroBytes(bytes) };
}

/** The GGUF of a tool-capable char model: charModelSpec's recipe with the flavour's vocabulary and template. */
function toolModelSpec(flavour: ToolTemplateFlavour, shape: CharModelShape = TOOL_MODEL_SHAPE): GgufSpec {
  const vocab = buildToolVocab(flavour);
  const nVocab = vocab.tokens.length;
  const nEmbd = shape.embeddingLength;
  if (nEmbd < nVocab) throw new Error(`embeddingLength ${nEmbd} must be >= vocabulary size ${nVocab}`);
  const nEmbdKv = (nEmbd / shape.headCount) * shape.headCountKv;
  const tensors: GgufTensorSpec[] = [
    { name: "token_embd.weight", dims: [nEmbd, nVocab], type: GgmlType.F32, data: () => f32Rows(nVocab, nEmbd, (token, row) => void (row[token] = 1)) },
  ];
  for (let l = 0; l < shape.blockCount; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: `${p}attn_norm.weight`, dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
      zeroTensor(`${p}attn_q.weight`, [nEmbd, nEmbd], shape.layerType),
      zeroTensor(`${p}attn_k.weight`, [nEmbd, nEmbdKv], shape.layerType),
      zeroTensor(`${p}attn_v.weight`, [nEmbd, nEmbdKv], shape.layerType),
      zeroTensor(`${p}attn_output.weight`, [nEmbd, nEmbd], shape.layerType),
      { name: `${p}ffn_norm.weight`, dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
      zeroTensor(`${p}ffn_gate.weight`, [nEmbd, shape.feedForwardLength], shape.layerType),
      zeroTensor(`${p}ffn_down.weight`, [shape.feedForwardLength, nEmbd], shape.layerType),
      zeroTensor(`${p}ffn_up.weight`, [nEmbd, shape.feedForwardLength], shape.layerType),
    );
  }
  tensors.push(
    { name: "output_norm.weight", dims: [nEmbd], type: GgmlType.F32, data: ones(nEmbd) },
    {
      name: "output.weight",
      dims: [nEmbd, nVocab],
      type: GgmlType.F32,
      // Row v holds the logit of token v: a 1 at every input token whose successor is v.
      data: () => f32Rows(nVocab, nEmbd, (v, row) => vocab.next.forEach((succ, input) => void (succ === v && (row[input] = 1)))),
    },
  );
  const idOf = (piece: string) => vocab.tokens.indexOf(piece);
  const metadata = llamaMetadata({
    ...shape,
    name: flavour.name,
    fileType: shape.layerType === GgmlType.F16 ? 1 : 0,
    tokens: vocab.tokens,
    tokenTypes: vocab.types,
    extra: [
      ["tokenizer.ggml.eot_token_id", u32(idOf(flavour.endOfTurn))],
      ["tokenizer.chat_template", str(flavour.template)],
    ],
  });
  if (flavour.bos) {
    const bos = metadata.findIndex(([k]) => k === "tokenizer.ggml.bos_token_id");
    metadata[bos] = ["tokenizer.ggml.bos_token_id", u32(idOf(flavour.bos))];
  }
  return { metadata, tensors };
}

/** Writes a tool-capable char model to `path`; returns the file size in bytes. */
export function writeToolModel(path: string, flavour: ToolTemplateFlavour = QWEN25_FLAVOUR): Promise<number> {
  return writeGguf(path, toolModelSpec(flavour));
}
