import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { ChatMessage } from "../src/domain/generation.ts";
import { dropOldestTurns, fewestDropsThatFit, leastTurnsToDrop } from "../src/engine/truncation.ts";

/** A conversation of `n` turns of `size` characters each after a system message; one token a character. */
const conversation = (n: number, size: number): ChatMessage[] => [
  { role: "system", content: "s".repeat(10) },
  ...Array.from({ length: n }, (_, i) => ({ role: i % 2 === 0 ? ("user" as const) : ("assistant" as const), content: "x".repeat(size) })),
];

/** A template that adds `overhead` tokens per message: what a rendering of the conversation without `dropped` turns costs. */
const renderer = (messages: ChatMessage[], overhead: number) => {
  const renders: number[] = [];
  const render = (dropped: number) => {
    renders.push(dropped);
    return dropOldestTurns(messages, dropped)!.reduce((n, m) => n + m.content.length + overhead, 0);
  };
  return { render, renders };
};

describe("truncation", () => {
  it("drops the fewest turns that fit, rendering a handful of conversations whatever their length", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3_000 }), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 64, max: 4096 }), (n, size, overhead, context) => {
        const messages = conversation(n, size);
        const { render, renders } = renderer(messages, overhead);
        const fits = (tokens: number) => tokens < context;
        const most = n - 1;
        const r = fewestDropsThatFit({ most, atLeast: leastTurnsToDrop(messages, context, (t) => t.length), render, fits });
        // The answer, by arithmetic: the rendering without k turns is that many messages shorter.
        const total = (k: number) => 10 + overhead + (n - k) * (size + overhead);
        let exact = 0;
        while (exact < most && !fits(total(exact))) exact++;
        assert.equal(r.dropped, exact);
        assert.equal(r.rendered, total(exact));
        // Bounded by the lower bound's error (the template's overhead), not by the conversation's length.
        const error = Math.ceil(((overhead + 1) * (context / size + 2)) / size) + 2;
        assert.ok(renders.length <= 2 * Math.log2(error + 2) + 6, `${renders.length} renders for ${n} turns`);
      }),
      { numRuns: 200 },
    );
  });

  it("never tokenizes more than a context's worth of messages for its lower bound", () => {
    const messages = conversation(20_000, 40);
    let counted = 0;
    const bound = leastTurnsToDrop(messages, 2048, (t) => ((counted += t.length), t.length));
    assert.ok(counted < 2048 + 10 + 2 * 40, `${counted} characters tokenized`);
    // Keeping m messages of 40 fits while 10 + 40 m < 2048: m = 50, so 19,950 turns must go.
    assert.equal(bound, 20_000 - Math.floor((2048 - 10 - 1) / 40));
  });
});
