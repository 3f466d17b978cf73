import { DataCheck } from "@lathe/proto/lathe/type/v1/data_check";
import { DatasetFormat, DatasetRow, type CheckRowsRequest, type CheckRowsResponse } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { invalidArgument, type CallContext } from "@lathe/kit";
import type { IngestDeps } from "./ingest.js";
import { resolveOptions } from "./options.js";
import { parseLine } from "./parse.js";
import { VersionBuilder, type RowInput, type StoredRow } from "./processor.js";

/** The most lines one CheckRows call takes. */
export const maxCheckedLines = 1000;

/**
 * CheckRows: the lines parsed and checked as an upload's lines are (the same parser, the same
 * VersionBuilder with the same resolved options and tokenizer), nothing stored. Duplicates are
 * left out: they are a property of a whole file, which the caller has and the call does not.
 */
export async function checkRows(deps: Pick<IngestDeps, "tokenizers">, req: CheckRowsRequest, ctx: CallContext): Promise<CheckRowsResponse> {
  if (req.lines.length === 0 || req.lines.length > maxCheckedLines) throw invalidArgument("lines", `takes 1 to ${maxCheckedLines} lines, not ${req.lines.length}`);
  const opts = resolveOptions(req.checkOptions, "check_options");
  const tokenizer = await deps.tokenizers.resolve("check_options.tokenizer_model", opts.tokenizerModel, ctx);
  const rows: StoredRow[] = [];
  const builder = new VersionBuilder(opts, tokenizer, { write: async (b) => void rows.push(...b), markFailed: async () => undefined });
  let format: DatasetFormat = req.format === DatasetFormat.DATASET_FORMAT_UNSPECIFIED ? DatasetFormat.DATASET_FORMAT_AUTO : req.format;
  const forced = format !== DatasetFormat.DATASET_FORMAT_AUTO;
  const parseErrors: string[] = [];
  for (const [i, text] of req.lines.entries()) {
    const line = i + 1;
    const bytes = Buffer.from(text, "utf8");
    let input: RowInput;
    if (bytes.length > opts.maxLineBytes) {
      input = { line, error: `${bytes.length} bytes long; the limit is ${opts.maxLineBytes}`, check: DataCheck.DATA_CHECK_LINE_BYTES };
    } else {
      const parsed = parseLine(bytes, format);
      if (parsed.ok) {
        if (!forced && format === DatasetFormat.DATASET_FORMAT_AUTO) format = parsed.format;
        input = { line, row: parsed.row };
      } else {
        input = { line, error: parsed.reason, check: DataCheck.DATA_CHECK_PARSE };
        parseErrors.push(`line ${line}: ${parsed.reason}`);
      }
    }
    await builder.add(input);
  }
  await builder.finish({ format, name: "", checkOptions: undefined });
  const byLine = new Map(rows.map((r) => [r.line, r]));
  return {
    rows: req.lines.map((_, i) => {
      const r = byLine.get(i + 1)!;
      return DatasetRow.fromPartial({ lineNumber: r.line, messages: r.messages, failedChecks: r.failedChecks.filter((c) => c !== DataCheck.DATA_CHECK_EXACT_DUPLICATE && c !== DataCheck.DATA_CHECK_NEAR_DUPLICATE), tokenCount: r.tokenCount });
    }),
    parseErrors,
  };
}
