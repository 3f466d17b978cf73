import { chatRoles } from "@lathe/kit";
import { ChatRole, type ChatMessage } from "@lathe/proto/lathe/type/v1/chat";
import { DatasetFormat } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { detectRowFormat, parseTrainingLine, rowFormatNames, type RowFormat } from "@lathe/models";

/** A row in Lathe's one internal form: a conversation. */
export interface NormalRow {
  messages: ChatMessage[];
}

export type ParseResult = { ok: true; format: DatasetFormat; row: NormalRow } | { ok: false; reason: string };

const formatOf: Record<RowFormat, DatasetFormat> = {
  chat: DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES,
  instruction: DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT,
  prompt: DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION,
};
const rowFormatOf = new Map(Object.entries(formatOf).map(([row, format]) => [format, row as RowFormat]));

export const formatNames: Record<number, string> = Object.fromEntries(Object.entries(formatOf).map(([row, format]) => [format, rowFormatNames[row as RowFormat]]));

/** Which of the three formats a JSON object is in, by its keys. */
export function detectFormat(obj: Record<string, unknown>): DatasetFormat | undefined {
  const found = detectRowFormat(obj);
  return found === undefined ? undefined : formatOf[found];
}

/**
 * Parses one line with @lathe/models' parseTrainingLine, the rules tokenizeExample (the trainer,
 * `lathe train`) applies too: UTF-8, JSON, one of the three formats (the file's `format` when it
 * is known, else detected), and a conversation that makes sense (an optional system message
 * first, then user and assistant turns in turn, ending with the assistant, no empty turn), with no
 * control character or lone surrogate in any turn (see findForbiddenChar). Every failure says what
 * is wrong in words a user can act on. It never throws, whatever the bytes.
 */
export function parseLine(bytes: Buffer, format: DatasetFormat): ParseResult {
  const parsed = parseTrainingLine(bytes, { format: rowFormatOf.get(format) });
  if (!parsed.ok) return { ok: false, reason: parsed.reason };
  // parseTrainingLine gives only the roles kit's chatRoles names (system, user, assistant).
  const messages = parsed.example.messages.map((m): ChatMessage => ({ role: chatRoles.value(m.role)!, content: m.content }));
  return { ok: true, format: formatOf[parsed.format], row: { messages } };
}

/** The prompt of a row (every user turn) and its answer (every assistant turn), for length checks and dedup. */
export function promptOf(row: NormalRow): string {
  return row.messages.filter((m) => m.role === ChatRole.CHAT_ROLE_USER).map((m) => m.content).join("\n");
}
export function answerOf(row: NormalRow): string {
  return row.messages.filter((m) => m.role === ChatRole.CHAT_ROLE_ASSISTANT).map((m) => m.content).join("\n");
}
/** The whole conversation as one text, for duplicate detection. */
export function conversationText(row: NormalRow): string {
  return row.messages.map((m) => m.content).join("\n");
}
