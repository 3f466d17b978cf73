import { invalidArgument } from "@lathe/kit";
import { FormatKind, PiiKind, type CheckOptions } from "@lathe/proto/lathe/type/v1/data_check";
import type { PiiKind as TextPiiKind } from "@lathe/text";
import { Ajv, type ValidateFunction } from "ajv";
import { checkCleanText } from "./control-chars.js";

/** Check options with every default applied and every value checked. */
export interface ResolvedOptions {
  promptMinChars: number;
  answerMinChars: number;
  nearDuplicates: { enabled: boolean; numPerm: number; shingleSize: number; threshold: number };
  maxLineBytes: number;
  pii: { enabled: boolean; kinds: ReadonlySet<TextPiiKind> };
  answerFormat: { kind: "none" } | { kind: "regex"; regex: RegExp } | { kind: "json" } | { kind: "json_schema"; validate: ValidateFunction };
  tokenizerModel: string;
  maxSeqLength: number;
  minRowCount: number;
}

export const piiKindNames: Record<number, TextPiiKind> = {
  [PiiKind.PII_KIND_EMAIL]: "email",
  [PiiKind.PII_KIND_PHONE]: "phone",
  [PiiKind.PII_KIND_CARD_NUMBER]: "card_number",
  [PiiKind.PII_KIND_NATIONAL_ID]: "national_id",
  [PiiKind.PII_KIND_IP_ADDRESS]: "ip_address",
  [PiiKind.PII_KIND_API_KEY]: "api_key",
  [PiiKind.PII_KIND_IBAN]: "iban",
};
export const piiKindEnum: Record<TextPiiKind, PiiKind> = Object.fromEntries(Object.entries(piiKindNames).map(([k, v]) => [v, Number(k)])) as Record<TextPiiKind, PiiKind>;

function intIn(field: string, value: number | undefined, def: number, min: number, max: number, zeroMeansOff = false): number {
  if (value === undefined) return def;
  if (zeroMeansOff && value === 0) return 0;
  if (!Number.isInteger(value) || value < min || value > max) throw invalidArgument(field, `must be an integer from ${min} to ${max}${zeroMeansOff ? " (or 0 to turn the check off)" : ""}, got ${value}`);
  return value;
}

/** Applies the defaults of the data-quality checklist; `at` is the field path of the options. */
export function resolveOptions(o: CheckOptions | undefined, at: string): ResolvedOptions {
  const nd = o?.nearDuplicates;
  const threshold = nd?.jaccardThreshold || 0.8;
  if (!(threshold > 0 && threshold <= 1)) throw invalidArgument(`${at}.near_duplicates.jaccard_threshold`, `must be greater than 0 and at most 1, got ${threshold}`);
  const kinds = new Set<TextPiiKind>();
  for (const [i, k] of (o?.piiKinds ?? []).entries()) {
    const name = piiKindNames[k];
    if (!name) throw invalidArgument(`${at}.pii_kinds[${i}]`, `unknown PII kind ${k}`);
    kinds.add(name);
  }
  return {
    promptMinChars: intIn(`${at}.prompt_min_chars`, o?.promptMinChars, 20, 1, 1_000_000, true),
    answerMinChars: intIn(`${at}.answer_min_chars`, o?.answerMinChars, 50, 1, 1_000_000, true),
    nearDuplicates: {
      enabled: !nd?.disabled,
      numPerm: intIn(`${at}.near_duplicates.num_perm`, nd?.numPerm || undefined, 128, 16, 1024),
      shingleSize: intIn(`${at}.near_duplicates.shingle_size`, nd?.shingleSize || undefined, 3, 1, 16),
      threshold,
    },
    maxLineBytes: intIn(`${at}.max_line_bytes`, o?.maxLineBytes, 1 << 20, 1024, 16 << 20),
    pii: { enabled: !o?.piiDisabled, kinds: kinds.size > 0 ? kinds : new Set(Object.values(piiKindNames)) },
    answerFormat: resolveFormat(o, at),
    tokenizerModel: checkCleanText(`${at}.tokenizer_model`, o?.tokenizerModel ?? ""),
    maxSeqLength: intIn(`${at}.max_seq_length`, o?.maxSeqLength, 2048, 16, 1 << 20),
    minRowCount: intIn(`${at}.min_row_count`, o?.minRowCount, 500, 0, 1 << 30),
  };
}

function resolveFormat(o: CheckOptions | undefined, at: string): ResolvedOptions["answerFormat"] {
  const f = o?.answerFormat;
  // The options are stored with the version, and Postgres keeps no NUL.
  checkCleanText(`${at}.answer_format.pattern`, f?.pattern ?? "");
  checkCleanText(`${at}.answer_format.json_schema`, f?.jsonSchema ?? "");
  switch (f?.kind ?? FormatKind.FORMAT_KIND_UNSPECIFIED) {
    case FormatKind.FORMAT_KIND_UNSPECIFIED:
      return { kind: "none" };
    case FormatKind.FORMAT_KIND_REGEX:
      try {
        return { kind: "regex", regex: new RegExp(f!.pattern, "u") };
      } catch (err) {
        throw invalidArgument(`${at}.answer_format.pattern`, `is not a valid regular expression: ${(err as Error).message}`);
      }
    case FormatKind.FORMAT_KIND_JSON:
      return { kind: "json" };
    case FormatKind.FORMAT_KIND_JSON_SCHEMA: {
      let schema: unknown;
      try {
        schema = JSON.parse(f!.jsonSchema);
      } catch (err) {
        throw invalidArgument(`${at}.answer_format.json_schema`, `is not valid JSON: ${(err as Error).message}`);
      }
      try {
        return { kind: "json_schema", validate: new Ajv({ allErrors: false, strict: false }).compile(schema as object) };
      } catch (err) {
        throw invalidArgument(`${at}.answer_format.json_schema`, `is not a valid JSON Schema: ${(err as Error).message}`);
      }
    }
    default:
      throw invalidArgument(`${at}.answer_format.kind`, `unknown format kind ${f?.kind}`);
  }
}
