import type { Metadata } from "@grpc/grpc-js";
import { call, createClient } from "@lathe/kit";
import { DatasetFormat, DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { CheckOptions, DataCheck } from "@lathe/proto/lathe/type/v1/data_check";
import { normalizeText } from "@lathe/text";
import type { Turn } from "../db/migrations.js";

/** Why the dataset service's checks refuse a row, as a rejection reason: `parse`, `pii`, `prompt_length`, … */
export const checkReason = (c: DataCheck): string => DataCheck[c].replace(/^DATA_CHECK_/, "").toLowerCase();

/** The most serious failed check names the rejection: what cannot be used at all before what is only short. */
const ORDER = [DataCheck.DATA_CHECK_PARSE, DataCheck.DATA_CHECK_LINE_BYTES, DataCheck.DATA_CHECK_PII, DataCheck.DATA_CHECK_TOKEN_LIMIT, DataCheck.DATA_CHECK_ANSWER_FORMAT, DataCheck.DATA_CHECK_PROMPT_LENGTH, DataCheck.DATA_CHECK_ANSWER_LENGTH];
const severity = (c: DataCheck) => (ORDER.includes(c) ? ORDER.indexOf(c) : ORDER.length);

/** The text a row is compared by (the conversation, normalised as the dataset service does). */
export const conversationKey = (turns: readonly Turn[]): string => normalizeText(turns.map((t) => t.content).join("\n"));

/**
 * The dataset service's own checks on one example (its parser, PII, lengths, answer format,
 * token limit, with the job's CheckOptions), through its CheckRows API with the tenant's key:
 * the first failed check's reason and the parser's message, or undefined when it passes.
 */
export async function datasetChecks(address: string, md: Metadata, turns: readonly Turn[], checkOptions: unknown): Promise<{ reason: string; detail: string } | undefined> {
  const client = createClient(DatasetServiceClient, address, { deadlineMs: 30_000 });
  try {
    const { rows, parseErrors } = await call(client, "checkRows", { lines: [JSON.stringify({ messages: turns })], format: DatasetFormat.DATASET_FORMAT_AUTO, checkOptions: CheckOptions.fromJSON(checkOptions) }, md);
    const failed = [...(rows[0]?.failedChecks ?? [])].sort((a, b) => severity(a) - severity(b));
    if (failed.length === 0) return undefined;
    return { reason: checkReason(failed[0]!), detail: parseErrors[0]?.replace(/^line 1: /, "") ?? `fails ${failed.map(checkReason).join(", ")}` };
  } finally {
    client.close();
  }
}
