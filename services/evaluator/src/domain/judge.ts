import { meanWithCi } from "@lathe/text";
import { JudgeResult } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import type { ChatTurn } from "../db/migrations.js";
import type { BootstrapSettings } from "./aggregate.js";

/** One reading of a judge's reply. */
export type Preference = "A" | "B" | "TIE" | "UNREADABLE";
/** An example's verdict after both orders, as stored. */
export type Verdict = "candidate" | "baseline" | "tie";

export const DEFAULT_CRITERIA = "The better answer is correct, complete and consistent with the reference answer; between two such answers, the more concise one.";

/**
 * The judge's chat for one order of the two answers: instructions (with the run's criteria), the
 * conversation the answers reply to, the reference answer, answer A and answer B, and the reply
 * asked for (one word: A, B or TIE). The judge sees neither which model wrote which answer nor
 * whether it is the first or second asking.
 */
export function judgeTurns(prompt: readonly ChatTurn[], reference: string, a: string, b: string, criteria: string): ChatTurn[] {
  const conversation = prompt.map((t) => `[${t.role}]\n${t.content}`).join("\n\n");
  return [
    {
      role: "system",
      content: `You are an impartial judge comparing two answers to the same conversation. ${criteria || DEFAULT_CRITERIA} Do not let the order of the answers, their length or their style sway you beyond that. Reply with exactly one word: A if answer A is better, B if answer B is better, TIE if neither is.`,
    },
    {
      role: "user",
      content: `# Conversation\n${conversation}\n\n# Reference answer\n${reference}\n\n# Answer A\n${a}\n\n# Answer B\n${b}\n\nWhich answer is better? Reply A, B or TIE.`,
    },
  ];
}

/**
 * A judge's reply read as a preference: the reply's first word (ignoring case, markdown emphasis,
 * brackets and punctuation around it, e.g. "**A**", "[[B]]", "Tie."), or a lone "Answer A" /
 * "Verdict: B" line; anything else is UNREADABLE.
 */
export function readPreference(reply: string): Preference {
  const clean = (s: string) => s.replace(/[*_`[\]().:!"'#]/g, " ").trim().toUpperCase();
  const words = clean(reply).split(/\s+/).filter(Boolean);
  const first = words[0];
  if (first === "A" || first === "B" || first === "TIE") return first;
  for (const line of reply.split("\n")) {
    const m = /^(?:ANSWER|VERDICT|FINAL(?: VERDICT)?|WINNER)\s+(A|B|TIE)$/.exec(clean(line));
    if (m) return m[1] as Preference;
  }
  return "UNREADABLE";
}

/**
 * The verdict of an example from the two askings: `first` with the candidate as A, `second` with
 * the candidate as B. The candidate (or the baseline) wins only when both orders prefer it; any
 * disagreement, tie or unreadable reply is a tie.
 */
export function combine(first: Preference, second: Preference): { verdict: Verdict; disagreement: boolean; unreadable: boolean } {
  const unreadable = first === "UNREADABLE" || second === "UNREADABLE";
  if (unreadable) return { verdict: "tie", disagreement: false, unreadable };
  // The side each asking preferred: the candidate is A the first time, B the second.
  const one = first === "A" ? "candidate" : first === "B" ? "baseline" : "tie";
  const two = second === "B" ? "candidate" : second === "A" ? "baseline" : "tie";
  if (one === two) return { verdict: one, disagreement: false, unreadable };
  return { verdict: "tie", disagreement: true, unreadable };
}

/** The judge's result over the judged examples (proto JSON of JudgeResult): counts and the win rate with its bootstrap interval. */
export function judgeResultOf(model: string, judged: readonly { first: string; second: string }[], b: BootstrapSettings): unknown {
  let wins = 0;
  let losses = 0;
  let disagreements = 0;
  let unreadable = 0;
  const points: number[] = [];
  for (const j of judged) {
    const c = combine(readPreference(j.first), readPreference(j.second));
    if (c.verdict === "candidate") wins++;
    else if (c.verdict === "baseline") losses++;
    if (c.disagreement) disagreements++;
    if (c.unreadable) unreadable++;
    points.push(c.verdict === "candidate" ? 1 : c.verdict === "baseline" ? 0 : 0.5);
  }
  const ci = points.length === 0 ? undefined : meanWithCi(points, { seed: b.seed, resamples: b.resamples, level: b.level });
  return JudgeResult.toJSON({
    model,
    winCount: wins,
    lossCount: losses,
    tieCount: judged.length - wins - losses,
    disagreementCount: disagreements,
    unreadableCount: unreadable,
    winRate: ci?.mean ?? 0,
    confidenceInterval: ci ? { lower: ci.lower, upper: ci.upper, level: ci.level } : undefined,
    exampleCount: judged.length,
  });
}
