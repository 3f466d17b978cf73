import type { ChatTurn, ModelTokenizer } from "@lathe/models";
import { z } from "zod";
import { badRequest } from "./errors.js";
import type { GenerationRequest } from "./embedded.js";

const textPart = z.object({ type: z.literal("text"), text: z.string() });
const content = z.union([z.string(), z.array(textPart)]);

const sampling = {
  model: z.string().min(1),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
  seed: z.number().int().min(-(2 ** 63)).max(2 ** 63).nullish(),
  n: z.literal(1, { message: "only n=1 is supported" }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
};

const chatSchema = z.object({
  ...sampling,
  messages: z
    .array(
      z.object({
        role: z.enum(["system", "developer", "user", "assistant"], { message: "role must be system, developer, user or assistant (tools are not supported)" }),
        content: content.nullish(),
      }),
    )
    .min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
  // Checked by responseFormatOf (json-schema.ts), which names the schema path it refuses.
  response_format: z.unknown().optional(),
  tools: z.array(z.unknown()).max(0, { message: "tools are not supported by this gateway" }).nullish(),
});

const completionSchema = z.object({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, { message: "exactly one prompt is supported" })]),
  echo: z.literal(false, { message: "echo is not supported" }).nullish(),
  suffix: z.null({ message: "suffix is not supported" }).nullish(),
  logprobs: z.null({ message: "logprobs is not supported" }).nullish(),
  best_of: z.literal(1, { message: "only best_of=1 is supported" }).nullish(),
});

export type ChatRequest = z.infer<typeof chatSchema>;
export type CompletionRequest = z.infer<typeof completionSchema>;

function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw badRequest("The request body must be a JSON object.");
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const param = issue.path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("");
  throw badRequest(`${param === "" ? "" : `${param}: `}${issue.code === "invalid_type" && issue.input === undefined ? "this field is required" : issue.message}`, param === "" ? null : param);
}

export const parseChatRequest = (body: unknown): ChatRequest => parse(chatSchema, body);
export const parseCompletionRequest = (body: unknown): CompletionRequest => parse(completionSchema, body);

/**
 * The prompt of a chat as the model was trained on it: the messages rendered with its chat
 * template and the assistant's generation prompt (where training's answer spans start), tokenized
 * with its tokenizer.
 */
export function chatPrompt(tok: ModelTokenizer, req: ChatRequest): number[] {
  const turns: ChatTurn[] = req.messages.map((m) => ({
    role: m.role === "developer" ? "system" : m.role,
    content: typeof m.content === "string" ? m.content : (m.content ?? []).map((p) => p.text).join(""),
  }));
  if (turns.at(-1)?.role === "assistant") throw badRequest("The last message must not be the assistant's: continuing an answer is not supported.", "messages");
  let rendered;
  try {
    rendered = tok.chatAnswerSpans([...turns, { role: "assistant", content: "" }]);
  } catch (err) {
    throw badRequest(`These messages cannot be rendered with the model's chat template: ${err instanceof Error ? err.message : String(err)}`, "messages");
  }
  const start = rendered.spans.at(-1)!.start;
  return tok.encode(rendered.text.slice(0, start));
}

/** The prompt of a completion: its text, tokenized with the model's tokenizer (no special tokens added). */
export const completionPrompt = (tok: ModelTokenizer, req: CompletionRequest): number[] => tok.encode(typeof req.prompt === "string" ? req.prompt : req.prompt[0]!);

/** OpenAI's sampling settings as a generation: temperature and top_p default to 1, as OpenAI's do. */
export function generationOf(req: ChatRequest | CompletionRequest, prompt: number[]): GenerationRequest {
  const max = ("max_completion_tokens" in req ? req.max_completion_tokens : undefined) ?? req.max_tokens ?? undefined;
  const stop = req.stop == null ? [] : typeof req.stop === "string" ? [req.stop] : req.stop;
  // llama.cpp takes a 32-bit seed.
  const seed = req.seed == null ? undefined : Number(BigInt.asUintN(32, BigInt(req.seed)));
  return { prompt, maxTokens: max, temperature: req.temperature ?? 1, topP: req.top_p ?? 1, seed, stop };
}
