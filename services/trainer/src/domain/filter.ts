import { fineTuningMethods, invalidArgument, resourceIdPattern } from "@lathe/kit";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import type { JobState } from "../db/tables.js";

/** One comparison of a ListFineTuningJobs filter, its value checked against the field's type. */
export type FilterTerm =
  | { column: "state"; op: "=" | "!="; value: JobState }
  | { column: "method"; op: "=" | "!="; value: "lora" | "qlora" }
  | { column: "baseModel" | "trainDatasetVersion"; op: "=" | "!="; value: string }
  | { column: "labels"; label: string; op: "=" | "!="; value: string };

/** The longest filter read, in characters. */
export const FILTER_MAX_LENGTH = 2000;
/** The most comparisons one filter may join with AND. */
export const FILTER_MAX_TERMS = 20;

const STATES: Record<string, JobState> = { STATE_QUEUED: "QUEUED", STATE_RUNNING: "RUNNING", STATE_SUCCEEDED: "SUCCEEDED", STATE_FAILED: "FAILED", STATE_CANCELLED: "CANCELLED" };
// The method identifiers a filter takes, for the message refusing another: those the codec names.
const METHODS = fineTuningMethods.names.map((n) => FineTuningMethod[fineTuningMethods.value(n)!]);
const FIELDS = "state, method, base_model, train_dataset_version or labels.<key>";
const id = resourceIdPattern.source.slice(1, -1);
const MODEL_NAME = new RegExp(`^models/${id}$`);
const DATASET_VERSION_NAME = new RegExp(`^datasets/${id}/versions/${id}$`);
const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;

// Tab, newline and carriage return may separate terms; every other control character is refused.
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
// One comparison: a field, `=` or `!=`, and a string in double quotes or a bare word (enum names).
const TERM = /\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[^\s=!"]*)?)\s*(!=|=)\s*(?:"((?:[^"\\\t\n\r]|\\[^\t\n\r])*)"|([A-Za-z0-9_]+))/y;
const AND = /\s+AND\s+/y;
const END = /\s*$/y;

const bad = (message: string) => invalidArgument("filter", message);
const quote = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

/**
 * Reads the AIP-160 subset ListFineTuningJobs takes: `field = value` / `field != value` joined by
 * AND, strings in double quotes (`\` escapes the next character), enum values by name. Anything
 * else, an over-long filter, too many terms, control characters or a value that cannot be of its
 * field's type, is INVALID_ARGUMENT on `filter` saying what and where, before any SQL is built.
 */
export function parseFilter(filter: string): FilterTerm[] {
  if (filter.length > FILTER_MAX_LENGTH) throw bad(`is ${filter.length} characters long; the limit is ${FILTER_MAX_LENGTH}`);
  const control = CONTROL.exec(filter);
  if (control) throw bad(`holds the control character U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")} at offset ${control.index}`);
  if (filter.trim() === "") return [];
  const terms: FilterTerm[] = [];
  let at = 0;
  for (;;) {
    if (terms.length === FILTER_MAX_TERMS) throw bad(`has more than ${FILTER_MAX_TERMS} comparisons; the limit is ${FILTER_MAX_TERMS}`);
    TERM.lastIndex = at;
    const m = TERM.exec(filter);
    if (!m) throw bad(`cannot read ${quote(filter.slice(at).trim())} at offset ${at}: expected field = value or field != value (strings in double quotes), joined by AND`);
    terms.push(termOf(m[1]!, m[2] as "=" | "!=", m[3], m[4]));
    at = TERM.lastIndex;
    END.lastIndex = at;
    if (END.test(filter)) return terms;
    AND.lastIndex = at;
    if (!AND.test(filter)) throw bad(`expected AND or the end at offset ${at}, found ${quote(filter.slice(at).trim())}`);
    at = AND.lastIndex;
  }
}

function termOf(field: string, op: "=" | "!=", quoted: string | undefined, bare: string | undefined): FilterTerm {
  if (field === "state" || field === "method") {
    if (bare === undefined) throw bad(`${field} takes an enum value name, e.g. ${field === "state" ? "STATE_RUNNING" : "FINE_TUNING_METHOD_QLORA"}`);
    const value = field === "state" ? STATES[bare] : fineTuningMethods.nameOfIdentifier(bare);
    if (value === undefined) throw bad(`${quote(bare)} is not a ${field === "state" ? "job state" : "fine-tuning method"} (${(field === "state" ? Object.keys(STATES) : METHODS).join(", ")})`);
    return field === "state" ? { column: "state", op, value: value as JobState } : { column: "method", op, value: value as "lora" | "qlora" };
  }
  if (field !== "base_model" && field !== "train_dataset_version" && !field.startsWith("labels.")) throw bad(`cannot filter on ${quote(field)}; use ${FIELDS}`);
  if (quoted === undefined) throw bad(`${field} takes a string in double quotes`);
  const value = quoted.replace(/\\([\s\S])/g, "$1");
  if (field === "base_model") {
    if (!MODEL_NAME.test(value)) throw bad(`base_model: ${quote(value)} is not a model name (models/{model_id})`);
    return { column: "baseModel", op, value };
  }
  if (field === "train_dataset_version") {
    if (!DATASET_VERSION_NAME.test(value)) throw bad(`train_dataset_version: ${quote(value)} is not a dataset version name (datasets/{dataset_id}/versions/{version_id})`);
    return { column: "trainDatasetVersion", op, value };
  }
  const label = field.slice("labels.".length);
  if (!LABEL_KEY.test(label)) throw bad(`${quote(label)} is not a label key (1 to 63 lowercase letters, digits, '-' or '_', starting with a letter)`);
  if (value.length > 63) throw bad(`labels.${label}: label values are at most 63 characters`);
  return { column: "labels", label, op, value };
}
