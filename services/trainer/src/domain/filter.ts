import { badFilter as bad, fineTuningMethods, labelFilterTerm, quoteFilterValue as quote, readFilter, resourceIdPattern, type RawFilterTerm } from "@lathe/kit";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import type { JobState } from "../db/tables.js";

export { FILTER_MAX_LENGTH, FILTER_MAX_TERMS } from "@lathe/kit";

/** One comparison of a ListFineTuningJobs filter, its value checked against the field's type. */
export type FilterTerm =
  | { column: "state"; op: "=" | "!="; value: JobState }
  | { column: "method"; op: "=" | "!="; value: "lora" | "qlora" }
  | { column: "baseModel" | "trainDatasetVersion"; op: "=" | "!="; value: string }
  | { column: "labels"; label: string; op: "=" | "!="; value: string };

const STATES: Record<string, JobState> = { STATE_QUEUED: "QUEUED", STATE_RUNNING: "RUNNING", STATE_SUCCEEDED: "SUCCEEDED", STATE_FAILED: "FAILED", STATE_CANCELLED: "CANCELLED" };
// The method identifiers a filter takes, for the message refusing another: those the codec names.
const METHODS = fineTuningMethods.names.map((n) => FineTuningMethod[fineTuningMethods.value(n)!]);
const FIELDS = "state, method, base_model, train_dataset_version or labels.<key>";
const id = resourceIdPattern.source.slice(1, -1);
const MODEL_NAME = new RegExp(`^models/${id}$`);
const DATASET_VERSION_NAME = new RegExp(`^datasets/${id}/versions/${id}$`);

/**
 * Reads the filter of ListFineTuningJobs (the kit's AIP-160 subset) on its fields: state and
 * method by enum value name, base_model, train_dataset_version and labels.<key> as strings. A
 * value that cannot be of its field's type is INVALID_ARGUMENT on `filter` before any SQL is built.
 */
export function parseFilter(filter: string): FilterTerm[] {
  return readFilter(filter).map(termOf);
}

function termOf({ field, op, quoted, bare }: RawFilterTerm): FilterTerm {
  if (field === "state" || field === "method") {
    if (bare === undefined) throw bad(`${field} takes an enum value name, e.g. ${field === "state" ? "STATE_RUNNING" : "FINE_TUNING_METHOD_QLORA"}`);
    const value = field === "state" ? STATES[bare] : fineTuningMethods.nameOfIdentifier(bare);
    if (value === undefined) throw bad(`${quote(bare)} is not a ${field === "state" ? "job state" : "fine-tuning method"} (${(field === "state" ? Object.keys(STATES) : METHODS).join(", ")})`);
    return field === "state" ? { column: "state", op, value: value as JobState } : { column: "method", op, value: value as "lora" | "qlora" };
  }
  if (field.startsWith("labels.")) return { column: "labels", op, ...labelFilterTerm({ field, op, quoted, bare }) };
  if (field !== "base_model" && field !== "train_dataset_version") throw bad(`cannot filter on ${quote(field)}; use ${FIELDS}`);
  if (quoted === undefined) throw bad(`${field} takes a string in double quotes`);
  if (field === "base_model") {
    if (!MODEL_NAME.test(quoted)) throw bad(`base_model: ${quote(quoted)} is not a model name (models/{model_id})`);
    return { column: "baseModel", op, value: quoted };
  }
  if (!DATASET_VERSION_NAME.test(quoted)) throw bad(`train_dataset_version: ${quote(quoted)} is not a dataset version name (datasets/{dataset_id}/versions/{version_id})`);
  return { column: "trainDatasetVersion", op, value: quoted };
}
