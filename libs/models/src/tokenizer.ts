import path from "node:path";
import { Template } from "@huggingface/jinja";
import { ModelFormatError } from "./errors.js";
import { HfTokenizer } from "./hf-tokenizers.js";
import { LIMITS } from "./limits.js";
import { asObject, errorKind, readBoundedFile, readJsonFile, shown } from "./read-json.js";

export type ChatRole = "system" | "user" | "assistant";

export interface ChatTurn {
  role: ChatRole;
  content: string;
}

/** A Hugging Face tokenizer with its chat template, as training and token statistics use it. */
export interface ModelTokenizer {
  /** Token ids of plain text (no special tokens added). */
  encode(text: string): number[];
  /** Text of token ids; special tokens are kept. */
  decode(ids: readonly number[]): string;
  /**
   * The chat rendered with the model's chat template (rendered with bos_token/eos_token and
   * add_generation_prompt=false). Throws a ModelFormatError when the model has no usable template.
   */
  renderChat(messages: readonly ChatTurn[]): string;
  /**
   * Tokens of the rendered chat, and how many of them belong to assistant answers (including each
   * answer's end token), found by tokenizing prefixes of the rendered chat as training masks them.
   */
  countChat(messages: readonly ChatTurn[]): { total: number; answer: number };
  /**
   * The rendered chat (as renderChat) and the character span of each assistant answer in it: from
   * where the chat rendered up to that turn with add_generation_prompt=true ends, to just after the
   * answer's end token. countChat counts these spans and training labels them.
   */
  chatAnswerSpans(messages: readonly ChatTurn[]): { text: string; spans: { start: number; end: number }[] };
  readonly eosToken: string | undefined;
  readonly bosToken: string | undefined;
}

/** Tokenizer model types that @huggingface/tokenizers implements. */
const SUPPORTED_MODEL_TYPES = ["BPE", "WordPiece", "Unigram"] as const;

/**
 * Loads tokenizer.json and tokenizer_config.json from a Hugging Face model folder (the chat
 * template may also come from chat_template.jinja, as recent transformers save it).
 * @throws ModelFormatError naming the file: missing, invalid JSON, unsupported model type, a
 * vocabulary, merge list or added-token list past {@link LIMITS}.vocabSize or with ids outside it.
 */
export async function loadTokenizer(modelDir: string): Promise<ModelTokenizer> {
  const tokenizerFile = path.join(modelDir, "tokenizer.json");
  const configFile = path.join(modelDir, "tokenizer_config.json");
  const tokenizerJson = asObject(await readJsonFile(tokenizerFile, LIMITS.tokenizerJsonBytes));
  if (tokenizerJson === null) throw new ModelFormatError(tokenizerFile, "expected a JSON object");
  const config = asObject(await readJsonFile(configFile));
  if (config === null) throw new ModelFormatError(configFile, "expected a JSON object");

  const model = asObject(tokenizerJson["model"]);
  if (model === null) throw new ModelFormatError(tokenizerFile, "no `model` object");
  const type = model["type"];
  if (type !== undefined && !(SUPPORTED_MODEL_TYPES as readonly unknown[]).includes(type)) {
    throw new ModelFormatError(
      tokenizerFile,
      `unsupported tokenizer model type ${shown(type)} (supported: ${SUPPORTED_MODEL_TYPES.join(", ")})`,
    );
  }
  const addedTokens = tokenizerJson["added_tokens"] ?? [];
  if (!Array.isArray(addedTokens)) throw new ModelFormatError(tokenizerFile, "`added_tokens` is not a list");
  checkVocabulary(tokenizerFile, model, addedTokens);
  // The library iterates it; anything but a list would fail there, blamed on tokenizer.json.
  const additional = config["additional_special_tokens"];
  if (additional !== undefined && additional !== null && !Array.isArray(additional)) {
    throw new ModelFormatError(configFile, `\`additional_special_tokens\` must be a list, got ${shown(additional)}`);
  }

  let tokenizer: HfTokenizer;
  try {
    // The library iterates added_tokens unconditionally; older files leave it out.
    tokenizer = new HfTokenizer({ ...tokenizerJson, added_tokens: addedTokens }, config);
  } catch (err) {
    // Only the kind of error, and no cause: the library's message may quote the file.
    throw new ModelFormatError(tokenizerFile, `cannot build the tokenizer (${errorKind(err)})`);
  }

  const specials = new Set<string>();
  for (const token of addedTokens) {
    const entry = asObject(token);
    if (entry?.["special"] === true && typeof entry["content"] === "string") specials.add(entry["content"]);
  }
  const bosToken = tokenContent(config["bos_token"]);
  const eosToken = tokenContent(config["eos_token"]);
  if (eosToken !== undefined) specials.add(eosToken);

  const template = await loadChatTemplate(modelDir, configFile, config["chat_template"]);
  const templateVariables: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const value = tokenContent(config[key]);
    // transformers passes only the special tokens that are set; an unset one stays undefined.
    if (value !== undefined) templateVariables[key] = value;
  }

  const encode = (text: string): number[] =>
    text === "" ? [] : tokenizer.encode(text, { add_special_tokens: false }).ids;
  const count = (text: string): number => encode(text).length;

  const render = (messages: readonly ChatTurn[], addGenerationPrompt: boolean): string => {
    if (!template.ok) throw template.error;
    const plain = messages.map((m) => ({ role: m.role, content: m.content }));
    try {
      return template.value.render({ ...templateVariables, messages: plain, add_generation_prompt: addGenerationPrompt });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new Error(`chat template of ${template.file} failed to render: ${reason}`, { cause: err });
    }
  };

  const chatAnswerSpans = (messages: readonly ChatTurn[]): { text: string; spans: { start: number; end: number }[] } => {
    const text = render(messages, false);
    const spans: { start: number; end: number }[] = [];
    let cursor = 0;
    messages.forEach((message, index) => {
      if (message.role !== "assistant") return;
      const span = answerSpan(messages, index, text, cursor, render, specials);
      spans.push(span);
      cursor = span.end;
    });
    return { text, spans };
  };

  return {
    encode,
    decode: (ids) => (ids.length === 0 ? "" : tokenizer.decode([...ids], { clean_up_tokenization_spaces: false })),
    renderChat: (messages) => render(messages, false),
    countChat(messages) {
      const { text, spans } = chatAnswerSpans(messages);
      const answer = spans.reduce((n, span) => n + count(text.slice(0, span.end)) - count(text.slice(0, span.start)), 0);
      return { total: count(text), answer };
    },
    chatAnswerSpans,
    eosToken,
    bosToken,
  };
}

type LoadedTemplate = { ok: true; value: Template; file: string } | { ok: false; error: ModelFormatError };

/** A missing or unparsable template is not fatal: plain encoding still works, rendering says why it cannot. */
async function loadChatTemplate(modelDir: string, configFile: string, field: unknown): Promise<LoadedTemplate> {
  let source = pickTemplate(field);
  let file = configFile;
  if (source === undefined) {
    file = path.join(modelDir, "chat_template.jinja");
    source = await readBoundedFile(file, LIMITS.chatTemplateBytes).then(
      (bytes) => bytes.toString("utf8"),
      (err: unknown) => {
        if ((err as { cause?: NodeJS.ErrnoException }).cause?.code === "ENOENT") return undefined;
        throw err;
      },
    );
  }
  if (source === undefined) {
    return {
      ok: false,
      error: new ModelFormatError(configFile, "no `chat_template` (and no chat_template.jinja), so chats cannot be rendered"),
    };
  }
  try {
    return { ok: true, value: new Template(source), file };
  } catch (err) {
    // The parser's message may quote the template, which may be any file a link points to.
    return { ok: false, error: new ModelFormatError(file, `chat template does not parse (${errorKind(err)})`) };
  }
}

/**
 * Checks the sizes and ids of what the tokenizer library builds arrays and maps from, before it
 * does: `model.vocab` (an object of ids, or Unigram's list of [piece, score]), `model.merges` and
 * `added_tokens`, each at most {@link LIMITS}.vocabSize long with ids below it.
 */
function checkVocabulary(file: string, model: Record<string, unknown>, addedTokens: readonly unknown[]): void {
  const fail = (message: string): never => {
    throw new ModelFormatError(file, message);
  };
  const max = LIMITS.vocabSize;
  const isId = (id: unknown): boolean => typeof id === "number" && Number.isSafeInteger(id) && id >= 0 && id < max;
  const vocab = model["vocab"];
  if (Array.isArray(vocab)) {
    if (vocab.length > max) fail(`model.vocab holds ${vocab.length} pieces; at most ${max} are supported`);
    if (vocab.length === 0) fail("model.vocab is empty");
    vocab.forEach((entry, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number" || !Number.isFinite(entry[1])) {
        fail(`model.vocab[${i}] must be [piece, score]`);
      }
    });
    const unk = model["unk_id"];
    if (unk !== undefined && unk !== null && !(isId(unk) && (unk as number) < vocab.length)) fail(`model.unk_id ${shown(unk)} is not an index of model.vocab`);
  } else {
    const entries = Object.entries(asObject(vocab) ?? fail("model.vocab must be an object of token ids or a list of [piece, score]"));
    if (entries.length > max) fail(`model.vocab holds ${entries.length} tokens; at most ${max} are supported`);
    for (const [token, id] of entries) if (!isId(id)) fail(`model.vocab: token ${shown(token)} has id ${shown(id)}; ids are integers from 0 to ${max - 1}`);
  }
  const merges = model["merges"];
  if (merges !== undefined && merges !== null) {
    if (!Array.isArray(merges)) fail("model.merges must be a list");
    const list = merges as unknown[];
    if (list.length > max) fail(`model.merges holds ${list.length} merges; at most ${max} are supported`);
    list.forEach((m, i) => {
      if (typeof m !== "string" && !(Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string")) {
        fail(`model.merges[${i}] is neither "left right" nor [left, right]`);
      }
    });
  }
  if (addedTokens.length > max) fail(`added_tokens holds ${addedTokens.length} tokens; at most ${max} are supported`);
  addedTokens.forEach((entry, i) => {
    const token = asObject(entry);
    if (token === null || !isId(token["id"]) || typeof token["content"] !== "string") {
      fail(`added_tokens[${i}] needs an id from 0 to ${max - 1} and a string content`);
    }
  });
}

/** `chat_template` is a string, or a list of `{name, template}` of which "default" is the chat one. */
function pickTemplate(field: unknown): string | undefined {
  if (typeof field === "string") return field;
  if (!Array.isArray(field)) return undefined;
  const named = field.map(asObject).find((entry) => entry?.["name"] === "default");
  const template = named?.["template"];
  return typeof template === "string" ? template : undefined;
}

/** Special tokens in tokenizer_config.json are strings, or AddedToken objects with `content`. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  const content = asObject(value)?.["content"];
  return typeof content === "string" ? content : undefined;
}

/**
 * Character span of assistant turn `index` in the rendered chat `full`: it starts where the chat
 * rendered up to that turn with a generation prompt ends, and ends after the first special token
 * that follows the answer's content within the turn (`<|im_end|>`, `<|eot_id|>`, `</s>`), so the
 * model learns to stop. Templates that do not render prefixes of one another fall back to
 * finding the content itself.
 */
function answerSpan(
  messages: readonly ChatTurn[],
  index: number,
  full: string,
  cursor: number,
  render: (messages: readonly ChatTurn[], addGenerationPrompt: boolean) => string,
  specials: ReadonlySet<string>,
): { start: number; end: number } {
  const content = (messages[index]?.content ?? "").trim();
  const before = tryRender(render, messages.slice(0, index), true);
  let start: number;
  if (before !== undefined && before.length >= cursor && full.startsWith(before)) {
    start = before.length;
  } else {
    start = full.indexOf(content, cursor);
    if (start < 0) throw new Error(`chat template: assistant message ${index} cannot be found in the rendered chat`);
  }
  const at = full.indexOf(content, start);
  const contentEnd = at < 0 ? start : at + content.length;
  const through = tryRender(render, messages.slice(0, index + 1), false);
  const limit = through !== undefined && full.startsWith(through) && through.length >= contentEnd ? through.length : full.length;
  let end = contentEnd;
  let first = -1;
  for (const token of specials) {
    const found = full.indexOf(token, contentEnd);
    if (found < 0 || found + token.length > limit) continue;
    // The earliest special token ends the answer; of two that start together, the longer one.
    if (first < 0 || found < first || (found === first && found + token.length > end)) {
      first = found;
      end = found + token.length;
    }
  }
  return { start, end };
}

function tryRender(
  render: (messages: readonly ChatTurn[], addGenerationPrompt: boolean) => string,
  messages: readonly ChatTurn[],
  addGenerationPrompt: boolean,
): string | undefined {
  try {
    return render(messages, addGenerationPrompt);
  } catch {
    return undefined;
  }
}
