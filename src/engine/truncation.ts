import type { ChatMessage } from "../domain/generation.ts";

/**
 * "truncate": true: a conversation too long for the context loses its oldest turns until it fits. Rendering
 * and tokenizing a conversation costs time in its length, so the search renders as few conversations as it
 * can, each near the context's size: a lower bound from the messages' own tokens (counted from the newest
 * back, so only what can fit is tokenized), then a few renders around it. Measured on a 2,048-token model:
 * 20,000 turns (800 KB) are fitted in milliseconds; dropping one turn at a time, each render of the whole
 * conversation again, ran past the first-token limit.
 */

/** The indexes of the turns that may go, oldest first: not system messages, not tool results, not the last. */
function droppableTurns(messages: readonly ChatMessage[]): number[] {
  const last = messages.length - 1;
  const turns: number[] = [];
  messages.forEach((m, i) => {
    if (m.role !== "system" && m.role !== "tool" && i < last) turns.push(i);
  });
  return turns;
}

/** How many turns truncation can drop at most. */
export const droppableCount = (messages: readonly ChatMessage[]): number => droppableTurns(messages).length;

/**
 * The conversation without its `n` oldest turns: system messages and the last message stay, and a dropped
 * assistant message takes the tool results that answer it along. null: not that many can go.
 */
export function dropOldestTurns(messages: readonly ChatMessage[], n: number): ChatMessage[] | null {
  if (n === 0) return [...messages];
  const droppable = droppableTurns(messages);
  if (droppable.length < n) return null;
  const gone = new Set(droppable.slice(0, n));
  const callsGone = new Set(messages.filter((_, i) => gone.has(i)).flatMap((m) => (m.toolCalls ?? []).map((c) => c.id)));
  return messages.filter((m, i) => !gone.has(i) && !(m.role === "tool" && m.toolCallId !== undefined && callsGone.has(m.toolCallId)));
}

/** A message's own text, as the template will write it (without the template's markers). */
const messageText = (m: ChatMessage): string => m.content + (m.toolCalls ?? []).map((c) => c.name + c.arguments).join("");

/**
 * The fewest turns that must go, judged by the messages' own tokens alone: the template only adds to them.
 * Counted from the newest message back, so that no more than a context's worth of text is tokenized.
 */
export function leastTurnsToDrop(messages: readonly ChatMessage[], contextSize: number, countTokens: (text: string) => number): number {
  const droppable = droppableTurns(messages);
  let kept = 0;
  for (const m of messages) if (m.role === "system") kept += countTokens(m.content);
  // Walk the droppable turns from the newest: keeping turn j keeps every message from it on.
  let from = messages.length;
  for (let j = droppable.length - 1; j >= 0; j--) {
    for (let i = droppable[j]; i < from; i++) if (messages[i].role !== "system") kept += countTokens(messageText(messages[i]));
    from = droppable[j];
    if (kept >= contextSize) return j + 1;
  }
  return 0;
}

export interface Fitted<R> {
  /** Turns dropped. */
  dropped: number;
  rendered: R;
}

/**
 * The fewest dropped turns whose rendering fits, searched from `atLeast` (a lower bound) with steps that
 * double, then halved back: a handful of renders, each of a conversation near the context's size. More
 * dropped turns never make a conversation longer. When nothing fits, the rendering with every droppable turn
 * gone (the caller refuses it as too long).
 */
export function fewestDropsThatFit<R>(options: { most: number; atLeast: number; render: (dropped: number) => R; fits: (rendered: R) => boolean }): Fitted<R> {
  const { most, render, fits } = options;
  const tried = new Map<number, R>();
  const attempt = (n: number): R => {
    if (!tried.has(n)) tried.set(n, render(n));
    return tried.get(n)!;
  };
  const start = Math.min(Math.max(0, options.atLeast), most);
  // Galloping up from the bound to the first rendering that fits.
  let tooLong = -1;
  let fitting = start;
  for (let step = 1; !fits(attempt(fitting)); step *= 2) {
    if (fitting === most) return { dropped: most, rendered: attempt(most) };
    tooLong = fitting;
    fitting = Math.min(most, fitting + step);
  }
  // The bound was only an estimate: when it fits at once, one turn fewer may fit too, and then any number may.
  if (tooLong < 0) {
    const fewerFits = fitting > 0 && fits(attempt(fitting - 1));
    if (fewerFits) fitting -= 1;
    else tooLong = fitting - 1;
  }
  // Halving between what is too long (-1: nothing known) and what fits.
  let low = tooLong;
  while (fitting - low > 1) {
    const middle = Math.floor((low + fitting) / 2);
    if (middle >= 0 && fits(attempt(middle))) fitting = middle;
    else low = middle;
  }
  return { dropped: fitting, rendered: attempt(fitting) };
}
