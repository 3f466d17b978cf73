import { mulberry32 } from "@lathe/text";
import type { Turn } from "../db/migrations.js";

/** Examples shown per request, as the seed's prompt shows them. */
export const SHOWN = 3;

/**
 * The few-shot examples of request `n`: up to 3 of the pool, drawn by a shuffle seeded with the
 * job's seed and `n`, so consecutive requests see different examples in a different order (for
 * diversity) and a resumed job asks what it would have asked.
 */
export function shotsFor(pool: readonly Turn[][], n: number, seed: number): Turn[][] {
  const random = mulberry32((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0);
  const order = pool.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, SHOWN).map((i) => pool[i]!);
}

/** The teacher's messages for one new example: the task and the format, then the shown examples. */
export function teacherMessages(task: string, shots: readonly Turn[][]): Turn[] {
  const shown = shots.map((s) => JSON.stringify({ messages: s }, null, 2)).join("\n\n");
  return [
    {
      role: "system",
      content:
        "You write training examples for fine-tuning a language model. Each example is a conversation " +
        'as JSON: {"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}, ' +
        "optionally starting with a system message. Answer with exactly one new example as JSON and nothing else.",
    },
    { role: "user", content: `Task:\n${task}\n\nExamples of good training data:\n\n${shown}\n\nWrite one new, different example in the same format.` },
  ];
}

/** The example in a teacher's answer, or why there is none: the answer must be one JSON chat example. */
export function exampleIn(content: string): { turns: Turn[] } | { error: string } {
  let value: unknown;
  const text = content.trim().replace(/^```(?:json)?\s*\n?([\s\S]*?)\n?```$/, "$1");
  try {
    value = JSON.parse(text);
  } catch {
    return { error: "the answer is not JSON" };
  }
  const messages = (value as { messages?: unknown } | null)?.messages;
  if (!Array.isArray(messages)) return { error: "the answer has no messages list" };
  const turns: Turn[] = [];
  for (const [i, m] of messages.entries()) {
    const role = (m as { role?: unknown } | null)?.role;
    const c = (m as { content?: unknown } | null)?.content;
    if (role !== "system" && role !== "user" && role !== "assistant") return { error: `messages[${i}].role is not system, user or assistant` };
    if (typeof c !== "string") return { error: `messages[${i}].content is not a string` };
    turns.push({ role, content: c });
  }
  return { turns };
}
