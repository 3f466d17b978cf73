// Resource names as the CLI takes them: a full name passes through unchanged, a short form
// (`ID`, `MODEL/ADAPTER`, `DATASET@VERSION`) is expanded. The server checks what comes of it.

/** `ID` or `models/ID` → `models/ID`. */
export const modelName = (arg: string): string => (arg.startsWith("models/") ? arg : `models/${arg}`);

/** `MODEL/ADAPTER` or a full name → `models/M/adapters/A`. */
export function adapterName(arg: string): string {
  if (arg.startsWith("models/")) return arg;
  const [m, a] = arg.split("/");
  if (!m || !a) throw new Error(`${arg}: expected MODEL/ADAPTER (or models/M/adapters/A)`);
  return `models/${m}/adapters/${a}`;
}

/** `MODEL/ADAPTER@N` or a full name → `models/M/adapters/A/versions/N`. */
export function adapterVersionName(arg: string): string {
  if (arg.startsWith("models/")) return arg;
  const at = arg.lastIndexOf("@");
  if (at < 0) throw new Error(`${arg}: expected MODEL/ADAPTER@VERSION`);
  return `${adapterName(arg.slice(0, at))}/versions/${arg.slice(at + 1)}`;
}

/** ADAPTER (as {@link adapterName} takes it) and ALIAS → `models/M/adapters/A/aliases/ALIAS`. */
export const aliasName = (adapter: string, alias: string): string => `${adapterName(adapter)}/aliases/${alias}`;

/** `ID` or `datasets/ID` → `datasets/ID`. */
export const datasetName = (arg: string): string => (arg.startsWith("datasets/") ? arg : `datasets/${arg}`);

/** `DATASET@VERSION` or a full name → `datasets/D/versions/V`. */
export const datasetVersionName = (arg: string): string => (arg.startsWith("datasets/") ? arg : `datasets/${arg.replace("@", "/versions/")}`);

/** `ID` or `fineTuningJobs/ID` → `fineTuningJobs/ID`. */
export const jobName = (arg: string): string => (arg.startsWith("fineTuningJobs/") ? arg : `fineTuningJobs/${arg}`);

// The ids of names the server sent, for what the CLI prints. They do not validate: a name the
// server sent is shown as it came, not turned into an error.

/** `fineTuningJobs/ID` → `ID`. */
export const jobId = (name: string): string => (name.startsWith("fineTuningJobs/") ? name.slice("fineTuningJobs/".length) : name);

/** The id of a name's last segment: `models/M/adapters/A/versions/N` → `N`, `…/aliases/ALIAS` → `ALIAS`. */
export const lastId = (name: string): string => name.slice(name.lastIndexOf("/") + 1);
