import { nestedResourceName, qualifiedName, resourceId, resourceName } from "@lathe/kit";

// Resource names as the CLI takes them: a full name passes through unchanged, a short form
// (`ID`, `MODEL/ADAPTER`, `DATASET@VERSION`) is expanded. The server checks what comes of it.

/** The name `<parent>/<collection>/<id>` of a child of an already full name. */
const childName = (parent: string, collection: string, id: string): string => `${parent}/${resourceName(collection, id)}`;

/** `ID` or `models/ID` → `models/ID`. */
export const modelName = (arg: string): string => qualifiedName("models", arg);

/**
 * `MODEL/ADAPTER` or a full name → `models/M/adapters/A`; given `model` (ID or models/ID), a bare
 * `ADAPTER` (no `/`) is an adapter of that model.
 */
export function adapterName(arg: string, model?: string): string {
  if (arg.startsWith("models/")) return arg;
  if (model !== undefined && !arg.includes("/")) return nestedResourceName(["models", "adapters"], [resourceId(model, "models"), arg]);
  const [m, a] = arg.split("/");
  if (!m || !a) throw new Error(`${arg}: expected MODEL/ADAPTER (or models/M/adapters/A)`);
  return nestedResourceName(["models", "adapters"], [m, a]);
}

/** ADAPTER (as {@link adapterName} takes it) and VERSION (a number) → `models/M/adapters/A/versions/N`. */
export const versionOfAdapter = (adapter: string, version: string): string => childName(adapterName(adapter), "versions", version);

/** `MODEL/ADAPTER@N` or a full name → `models/M/adapters/A/versions/N`. */
export function adapterVersionName(arg: string): string {
  if (arg.startsWith("models/")) return arg;
  const at = arg.lastIndexOf("@");
  if (at < 0) throw new Error(`${arg}: expected MODEL/ADAPTER@VERSION`);
  return versionOfAdapter(arg.slice(0, at), arg.slice(at + 1));
}

/** ADAPTER (as {@link adapterName} takes it) and ALIAS → `models/M/adapters/A/aliases/ALIAS`. */
export const aliasName = (adapter: string, alias: string): string => childName(adapterName(adapter), "aliases", alias);

/** `ID` or `datasets/ID` → `datasets/ID`. */
export const datasetName = (arg: string): string => qualifiedName("datasets", arg);

/** `DATASET@VERSION` or a full name → `datasets/D/versions/V`. */
export function datasetVersionName(arg: string): string {
  const at = arg.indexOf("@");
  if (arg.startsWith("datasets/") || at < 0) return datasetName(arg);
  return nestedResourceName(["datasets", "versions"], [arg.slice(0, at), arg.slice(at + 1)]);
}

/** `ID` or `fineTuningJobs/ID` → `fineTuningJobs/ID`. */
export const jobName = (arg: string): string => qualifiedName("fineTuningJobs", arg);

// The ids of names the server sent, for what the CLI prints. They do not validate: a name the
// server sent is shown as it came, not turned into an error.

/** `fineTuningJobs/ID` → `ID`. */
export const jobId = (name: string): string => resourceId(name, "fineTuningJobs");

/** The id of a name's last segment: `models/M/adapters/A/versions/N` → `N`, `…/aliases/ALIAS` → `ALIAS`. */
export const lastId = (name: string): string => name.slice(name.lastIndexOf("/") + 1);
