import { AppError } from "@lathe/kit";
import { mulberry32 } from "@lathe/text";
import type { ChatTurn, ModelSpec } from "../db/migrations.js";

/** One eval example: the turns before the final answer, and that answer. */
export interface EvalExample {
  turns: ChatTurn[];
  reference: string;
}

/** A row as an eval example: its turns up to its final assistant message, and that message; undefined when it ends otherwise. */
export function exampleOf(turns: readonly ChatTurn[]): EvalExample | undefined {
  const last = turns.at(-1);
  if (!last || last.role !== "assistant" || turns.length < 2) return undefined;
  return { turns: turns.slice(0, -1), reference: last.content };
}

const norm = (s: string) => s.trim().replace(/\s+/g, " ").toLowerCase();
const promptText = (turns: readonly ChatTurn[]) => norm(turns.filter((t) => t.role !== "system").map((t) => t.content).join("\n"));

/**
 * The solved examples a few-shot prompt shows: `shots` rows of the training set drawn with the
 * seed (a seeded shuffle, the first `shots`), never a row whose prompt or answer is also an eval
 * example's (the same after trimming, collapsing whitespace and lowercasing). The same draw for
 * every prompt of the run, as a k-shot prompt is usually written.
 * @throws AppError FAILED_PRECONDITION when the training set has fewer usable rows than shots
 */
export function drawShots(train: readonly ChatTurn[][], evals: readonly EvalExample[], fewShot: NonNullable<ModelSpec["fewShot"]>, field: string): EvalExample[] {
  const evalPrompts = new Set(evals.map((e) => promptText(e.turns)));
  const evalAnswers = new Set(evals.map((e) => norm(e.reference)));
  const pool: EvalExample[] = [];
  for (const row of train) {
    const ex = exampleOf(row);
    if (ex && !evalPrompts.has(promptText(ex.turns)) && !evalAnswers.has(norm(ex.reference))) pool.push(ex);
  }
  if (pool.length < fewShot.shots) {
    throw new AppError("FAILED_PRECONDITION", "NOT_ENOUGH_SHOTS", `${field}: ${fewShot.datasetVersion} has ${pool.length} rows that are not in the eval set; ${fewShot.shots} shots were asked for`, { field });
  }
  const random = mulberry32(Number(BigInt.asUintN(32, BigInt(fewShot.seed))));
  const order = pool.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, fewShot.shots).map((i) => pool[i]!);
}

/**
 * The turns of a few-shot prompt: the eval example's system turn (if any) first, then each shot's
 * conversation with its answer, then the eval example's own turns.
 */
export function fewShotTurns(example: EvalExample, shots: readonly EvalExample[]): ChatTurn[] {
  const system = example.turns.filter((t) => t.role === "system");
  const shown = shots.flatMap((s) => [...s.turns.filter((t) => t.role !== "system"), { role: "assistant" as const, content: s.reference }]);
  return [...system, ...shown, ...example.turns.filter((t) => t.role !== "system")];
}
