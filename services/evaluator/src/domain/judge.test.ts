import { describe, expect, it } from "vitest";
import { combine, judgeResultOf, judgeTurns, readPreference } from "./judge.js";

describe("readPreference", () => {
  it.each([
    ["A", "A"],
    ["b", "B"],
    ["**A**", "A"],
    ["[[B]]", "B"],
    ["Tie.", "TIE"],
    ["TIE — both are fine", "TIE"],
    ["A. Answer A follows the reference.", "A"],
    ["Both answers are close.\nVerdict: B", "B"],
    ["Answer B", "B"],
    ["", "UNREADABLE"],
    ["Both are good", "UNREADABLE"],
    ["AB", "UNREADABLE"],
    ["(refused: the prompt is too long)", "UNREADABLE"],
  ])("%j → %s", (reply, want) => {
    expect(readPreference(reply)).toBe(want);
  });
});

describe("combine", () => {
  it("a side wins only when both orders prefer it; a position-biased judge gives ties", () => {
    expect(combine("A", "B")).toEqual({ verdict: "candidate", disagreement: false, unreadable: false });
    expect(combine("B", "A")).toEqual({ verdict: "baseline", disagreement: false, unreadable: false });
    expect(combine("TIE", "TIE")).toEqual({ verdict: "tie", disagreement: false, unreadable: false });
    // Always the first answer, always the second: the orders disagree.
    expect(combine("A", "A")).toEqual({ verdict: "tie", disagreement: true, unreadable: false });
    expect(combine("B", "B")).toEqual({ verdict: "tie", disagreement: true, unreadable: false });
    expect(combine("A", "TIE")).toEqual({ verdict: "tie", disagreement: true, unreadable: false });
    expect(combine("UNREADABLE", "B")).toEqual({ verdict: "tie", disagreement: false, unreadable: true });
  });
});

describe("judgeResultOf", () => {
  it("counts wins, losses and ties with their causes, and the win rate with a tie as half", () => {
    const judged = [
      { first: "A", second: "B" },
      { first: "A", second: "B" },
      { first: "B", second: "A" },
      { first: "A", second: "A" },
      { first: "TIE", second: "TIE" },
      { first: "?", second: "B" },
    ];
    const r = judgeResultOf("judge", judged, { seed: 1, resamples: 500, level: 0.9 }) as Record<string, unknown>;
    expect(r).toMatchObject({ model: "judge", winCount: 2, lossCount: 1, tieCount: 3, disagreementCount: 1, unreadableCount: 1, exampleCount: 6 });
    expect(r["winRate"]).toBeCloseTo((2 + 3 / 2) / 6, 12);
    const ci = r["confidenceInterval"] as { lower: number; upper: number; level: number };
    expect(ci.level).toBe(0.9);
    expect(ci.lower).toBeLessThanOrEqual(r["winRate"] as number);
    expect(ci.upper).toBeGreaterThanOrEqual(r["winRate"] as number);
  });
});

describe("judgeTurns", () => {
  it("shows the conversation, the reference and both answers in the given order, with the criteria", () => {
    const [system, user] = judgeTurns([{ role: "user", content: "2+2?" }], "4", "four", "5", "Exactness matters.");
    expect(system!.content).toContain("Exactness matters.");
    expect(user!.content).toBe("# Conversation\n[user]\n2+2?\n\n# Reference answer\n4\n\n# Answer A\nfour\n\n# Answer B\n5\n\nWhich answer is better? Reply A, B or TIE.");
  });
});
