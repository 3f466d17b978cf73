import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { TemplateSet, type Value } from "./go-template.js";
import { Ajv, jsYaml } from "./modules.js";

/*
 * `helm template` for this repository's chart, in the tests: values.yaml merged with the given
 * values files and --set-like overrides (maps merged key by key, a null removing a key, lists
 * replaced), checked against values.schema.json (Ajv, draft-07, as Helm does: bad values fail
 * before anything renders), then every file under templates/ rendered with .Values, .Release,
 * .Chart, .Capabilities and .Template, `_*.tpl` files only lending their defines, NOTES.txt
 * rendered apart, and the output split into YAML documents.
 */

type Dict = Record<string, Value>;
const isMap = (v: Value): v is Dict => typeof v === "object" && v !== null && !Array.isArray(v);

/** Helm's value coalescing: `over` wins; maps merge recursively; null deletes. */
export function mergeValues(base: Value, over: Value): Value {
  if (!isMap(base) || !isMap(over)) return over === undefined ? base : over;
  const out: Dict = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = mergeValues(base[k], v);
  }
  return out;
}

/** Helm's toYaml (sigs.k8s.io/yaml): sorted keys, lists not indented under their key, no final newline. */
export const toYaml = (v: Value): string => jsYaml.dump(v ?? null, { sortKeys: true, noArrayIndent: true, lineWidth: -1, noRefs: true }).replace(/\n$/, "");

export interface RenderedChart {
  values: Dict;
  /** Every object, in file order. */
  objects: Dict[];
  /** Each template file's output (`lathe/templates/x.yaml` → text), empty ones left out. */
  files: Map<string, string>;
  notes: string;
}

export interface Release {
  name: string;
  namespace: string;
}

export class ValuesError extends Error {
  override readonly name = "ValuesError";
}

export class Chart {
  readonly name: string;
  readonly meta: Dict;
  readonly defaults: Dict;
  readonly schema: Dict;
  private readonly templates: { path: string; src: string }[];
  private validate: any; // eslint-disable-line @typescript-eslint/no-explicit-any

  constructor(readonly dir: string) {
    this.meta = jsYaml.load(readFileSync(join(dir, "Chart.yaml"), "utf8")) as Dict;
    this.name = String(this.meta.name);
    this.defaults = (jsYaml.load(readFileSync(join(dir, "values.yaml"), "utf8")) ?? {}) as Dict;
    this.schema = JSON.parse(readFileSync(join(dir, "values.schema.json"), "utf8")) as Dict;
    const tdir = join(dir, "templates");
    this.templates = readdirSync(tdir, { recursive: true, encoding: "utf8" })
      .filter((f) => /\.(ya?ml|tpl|txt)$/.test(f))
      .sort()
      .map((f) => ({ path: `${this.name}/templates/${relative(tdir, join(tdir, f))}`, src: readFileSync(join(tdir, f), "utf8") }));
  }

  /** The values a release gets: defaults, then each file, then the overrides; schema-checked. */
  values(valueFiles: string[] = [], overrides: Dict = {}): Dict {
    let values: Value = this.defaults;
    for (const f of valueFiles) values = mergeValues(values, jsYaml.load(readFileSync(f, "utf8")) ?? {});
    values = mergeValues(values, overrides);
    this.validate ??= new Ajv({ allErrors: true, strict: false }).compile(this.schema);
    const validate = this.validate;
    if (!validate(values)) {
      const errors = (validate.errors as { instancePath: string; message: string; params: Record<string, unknown> }[]).map(
        (e) => `- ${e.instancePath || "(root)"}: ${e.message}${e.params.additionalProperty ? ` (${String(e.params.additionalProperty)})` : ""}${e.params.allowedValues ? ` ${JSON.stringify(e.params.allowedValues)}` : ""}`,
      );
      throw new ValuesError(`values don't meet the specifications of the schema(s) in the following chart(s):\n${this.name}:\n${errors.join("\n")}`);
    }
    return values as Dict;
  }

  render(opts: { valueFiles?: string[]; overrides?: Dict; release?: Partial<Release> } = {}): RenderedChart {
    const values = this.values(opts.valueFiles, opts.overrides);
    const set = new TemplateSet({ toYaml, fromYaml: (s) => jsYaml.load(s) });
    for (const t of this.templates) set.add(t.path, t.src);
    const data: Dict = {
      Values: values,
      Release: { Name: opts.release?.name ?? "lathe", Namespace: opts.release?.namespace ?? "lathe", Service: "Helm", IsInstall: true, IsUpgrade: false, Revision: 1 },
      Chart: Object.fromEntries(Object.entries(this.meta).map(([k, v]) => [k.charAt(0).toUpperCase() + k.slice(1), v])),
      Capabilities: { KubeVersion: { Version: "v1.30.0", Major: "1", Minor: "30" }, APIVersions: [] },
      Template: { BasePath: `${this.name}/templates` },
    };
    const files = new Map<string, string>();
    const objects: Dict[] = [];
    let notes = "";
    for (const t of this.templates) {
      const base = t.path.split("/").pop()!;
      if (base.startsWith("_")) continue;
      const out = set.render(t.path, data);
      if (base === "NOTES.txt") {
        notes = out;
        continue;
      }
      if (out.trim() === "") continue;
      files.set(t.path, out);
      for (const doc of out.split(/^---\s*$/m)) {
        if (doc.trim() === "") continue;
        let obj: Value;
        try {
          obj = jsYaml.load(doc);
        } catch (err) {
          throw new Error(`${t.path}: the rendered YAML does not parse: ${(err as Error).message}\n${doc}`);
        }
        if (obj === null || obj === undefined) continue;
        if (!isMap(obj)) throw new Error(`${t.path}: a document is not an object:\n${doc}`);
        objects.push(obj);
      }
    }
    return { values, objects, files, notes };
  }
}
