/** A model name as OpenAI clients send it: `BASE`, `BASE:ADAPTER` (its latest version), `BASE:ADAPTER@N`, `BASE:ADAPTER@ALIAS`. */
export type ModelName =
  | { base: string; adapter?: undefined }
  | { base: string; adapter: string; version?: number | undefined; alias?: string | undefined };

const ID = "[a-z0-9](?:[a-z0-9._-]{0,62})";
/** An alias starts with a letter, so that `@3` is always a version. */
const ALIAS = "[a-z](?:[a-z0-9._-]{0,62})";
const pattern = new RegExp(`^(${ID})(?::(${ID})(?:@(?:([1-9][0-9]{0,8})|(${ALIAS})))?)?$`);

/** The parts of a model name, or undefined when it is not one (answered as an unknown model). */
export function parseModelName(name: string): ModelName | undefined {
  const m = pattern.exec(name);
  if (!m) return undefined;
  const [, base, adapter, version, alias] = m;
  if (adapter === undefined) return { base: base! };
  return { base: base!, adapter, version: version === undefined ? undefined : Number(version), alias };
}

/** The registry's resource names of a model name's parts. */
export function registryNames(n: ModelName): { model: string; adapter?: string; version?: string; alias?: string } {
  const model = `models/${n.base}`;
  if (n.adapter === undefined) return { model };
  const adapter = `${model}/adapters/${n.adapter}`;
  if (n.version !== undefined) return { model, adapter, version: `${adapter}/versions/${n.version}` };
  if (n.alias !== undefined) return { model, adapter, alias: `${adapter}/aliases/${n.alias}` };
  return { model, adapter };
}

/** The OpenAI name of a registry model (`models/tiny` → `tiny`), adapter or alias. */
export function openAiName(model: string, adapter?: string, alias?: string): string {
  const base = model.replace(/^models\//, "");
  if (adapter === undefined) return base;
  const a = adapter.split("/").at(-1)!;
  return alias === undefined ? `${base}:${a}` : `${base}:${a}@${alias.split("/").at(-1)!}`;
}
