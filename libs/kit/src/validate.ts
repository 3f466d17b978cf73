import { invalidArgument } from "./errors.js";

/** Resource ids: what AIP-122 allows, lowercase so names are unambiguous in URLs and paths. */
export const resourceIdPattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const labelKeyPattern = /^[a-z][a-z0-9_-]{0,62}$/;

export function checkResourceId(field: string, id: string): string {
  if (id === "") throw invalidArgument(field, "is required");
  if (!resourceIdPattern.test(id)) {
    throw invalidArgument(field, `${JSON.stringify(id.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits, '-', '.' and '_', starting with a letter or digit`);
  }
  return id;
}

/** The id of a resource name `<collection>/<id>`. */
export function parseName(field: string, name: string, collection: string): string {
  return parseNestedName(field, name, [collection])[0]!;
}

/** The ids of a nested resource name, e.g. `datasets/{d}/versions/{v}` for `["datasets", "versions"]`. */
export function parseNestedName(field: string, name: string, collections: readonly string[]): string[] {
  if (name === "") throw invalidArgument(field, "is required");
  const parts = name.split("/");
  const shape = collections.map((c) => `${c}/{${c.replace(/s$/, "")}_id}`).join("/");
  if (parts.length !== collections.length * 2 || collections.some((c, i) => parts[i * 2] !== c)) {
    throw invalidArgument(field, `${JSON.stringify(name.slice(0, 120))} must look like ${shape}`);
  }
  return collections.map((_, i) => checkResourceId(field, parts[i * 2 + 1]!));
}

/** The resource name `<collection>/<id>`, e.g. `resourceName("models", id)`. */
export function resourceName(collection: string, id: string): string {
  return `${collection}/${id}`;
}

/**
 * A nested resource name, the inverse of `parseNestedName`: `nestedResourceName(["models",
 * "adapters"], [m, a])` is `models/{m}/adapters/{a}`. Throws (a bug) when the counts differ.
 */
export function nestedResourceName(collections: readonly string[], ids: readonly (string | number)[]): string {
  if (collections.length !== ids.length) throw new Error(`${collections.length} collections but ${ids.length} ids`);
  return collections.map((c, i) => `${c}/${ids[i]!}`).join("/");
}

/**
 * The id of a name of `collection` (`fineTuningJobs/j1` → `j1`) when it is one, else the name as
 * it is; it checks nothing, so it is for names already checked (keys, logs, messages), not for
 * requests: those go through `parseName`.
 */
export function resourceId(name: string, collection: string): string {
  return name.startsWith(`${collection}/`) ? name.slice(collection.length + 1) : name;
}

/** A bare id or a full name of `collection` as the full name: `j1` and `fineTuningJobs/j1` are both `fineTuningJobs/j1`. */
export function qualifiedName(collection: string, idOrName: string): string {
  return idOrName.startsWith(`${collection}/`) ? idOrName : resourceName(collection, idOrName);
}

export function checkText(field: string, value: string, max: number, required = false): string {
  if (required && value.trim() === "") throw invalidArgument(field, "is required");
  if (value.length > max) throw invalidArgument(field, `is ${value.length} characters long; the limit is ${max}`);
  return value;
}

export function checkLabels(field: string, labels: Record<string, string>): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > 64) throw invalidArgument(field, `has ${entries.length} labels; the limit is 64`);
  for (const [k, v] of entries) {
    if (!labelKeyPattern.test(k)) throw invalidArgument(`${field}.${k}`, "label keys are 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter");
    if (v.length > 63) throw invalidArgument(`${field}.${k}`, "label values are at most 63 characters");
  }
  return labels;
}

export function checkRequestId(field: string, id: string): string | null {
  if (id === "") return null;
  if (id.length > 128 || !/^[\x21-\x7e]+$/.test(id)) throw invalidArgument(field, "must be at most 128 printable ASCII characters without spaces");
  return id;
}
