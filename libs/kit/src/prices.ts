import { z } from "zod";

/** Prices per million input and output tokens, by model name. */
export type Prices = Record<string, { input: number; output: number }>;

const priceTable = z.record(z.string().min(1), z.object({ input: z.number().min(0), output: z.number().min(0) }).strict());

/**
 * A price table as configured (LATHE_EVALUATOR_PRICES, LATHE_SYNTHGEN_PRICES): JSON
 * `{"MODEL": {"input": USD, "output": USD}}` per million tokens.
 * @throws Error saying what is wrong and where
 */
export function parsePrices(raw: string): Prices {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new Error('must be JSON: {"MODEL": {"input": USD_PER_MILLION, "output": USD_PER_MILLION}, …}');
  }
  const r = priceTable.safeParse(parsed);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(`${i.path.join(".") || "(root)"}: ${i.message}; expected {"MODEL": {"input": USD_PER_MILLION, "output": USD_PER_MILLION}}`);
  }
  return r.data;
}

/** A config variable holding a price table, checked when the config loads. */
export const pricesVariable = z.string().superRefine((raw, ctx) => {
  try {
    parsePrices(raw);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

/** The cost in USD of tokens at a price per million. */
export const costOf = (price: { input: number; output: number }, promptTokens: number, completionTokens: number): number => (promptTokens * price.input + completionTokens * price.output) / 1e6;
