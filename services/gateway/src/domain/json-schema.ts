// OpenAI's `response_format` for the embedded engine. node-llama-cpp turns a JSON schema into a
// GBNF grammar (`llama.createGrammarForJsonSchema`), but it reads only a subset of JSON Schema and
// silently drops the rest (checked in 3.21.1, dist/utils/gbnfJson/): `anyOf` and `{}` become
// null-only, every listed property is always emitted whatever `required` says, unknown `format`s
// become the empty string, `pattern`/`minimum`/... are ignored, `maxItems` below `prefixItems` and
// `maxLength` below `minLength` are raised. So the user's schema is first rewritten into exactly
// what node-llama-cpp honours, and anything it would not enforce is refused with the schema path,
// never weakened. The answer is then checked with ajv against the user's original schema.
//
// The grammar enforces everything `normaliseJsonSchema` accepts except three corners, which is why
// the validator always runs on the answer:
// - `integer`: node-llama-cpp's integer rule allows an exponent, so `5e-1` (0.5) gets through;
// - `format: date` / `date-time`: the grammar checks digits and ranges (month 01-12, day 01-31),
//   not the calendar, so `2023-02-30` gets through;
// - `minLength`: the grammar counts a `\uXXXX` escape as one character, so a surrogate pair written
//   as two escapes counts twice.

import { AppError } from "@lathe/kit";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject } from "ajv/dist/2020.js";
import type { GbnfJsonSchema, Llama, LlamaGrammar } from "node-llama-cpp";

/** Where a `json_schema` response format keeps its schema in an OpenAI request. */
export const RESPONSE_SCHEMA_PATH = "response_format.json_schema.schema";

/**
 * Optional properties are offered as one object variant per subset of them (node-llama-cpp always
 * emits every listed property), so an object with k optional properties becomes 2^k alternatives.
 */
export const MAX_OPTIONAL_PROPERTIES = 4;

/** Schema nodes, counted as node-llama-cpp walks them (inlined `$ref`s and variants included). */
export const MAX_GRAMMAR_NODES = 10_000;

type ScalarType = "string" | "number" | "integer" | "boolean" | "null";
type GrammarLiteral = string | number | boolean | null;

/**
 * A schema that node-llama-cpp's `createGrammarForJsonSchema` turns into a grammar with nothing
 * left out: the subset of its `GbnfJsonSchema` this module emits. Absent fields are absent (not
 * null) because that is the shape node-llama-cpp reads. Objects list every property it must emit
 * and no extra key (node-llama-cpp's `additionalProperties` defaults to false), or list none and
 * allow any key.
 */
export type GrammarSchema =
  | { readonly type: ScalarType | readonly ScalarType[] }
  | { readonly const: GrammarLiteral }
  | { readonly enum: readonly GrammarLiteral[] }
  | { readonly oneOf: readonly GrammarSchema[] }
  | { readonly type: "string"; readonly minLength?: number; readonly maxLength?: number }
  | { readonly type: "string"; readonly format: "date" | "time" | "date-time" }
  | {
      readonly type: "object";
      readonly properties?: { readonly [key: string]: GrammarSchema };
      readonly additionalProperties?: boolean | GrammarSchema;
      readonly maxProperties?: number;
    }
  | {
      readonly type: "array";
      readonly items?: GrammarSchema;
      readonly prefixItems?: readonly GrammarSchema[];
      readonly minItems?: number;
      readonly maxItems?: number;
    };

/**
 * node-llama-cpp's grammar for a normalised schema (a `LlamaJsonSchemaGrammar`). Its
 * `createGrammarForJsonSchema` infers a `const` type parameter that no union of schemas satisfies,
 * so it is called here with an explicit type argument; that call also proves at compile time that
 * node-llama-cpp accepts every GrammarSchema.
 */
export function createJsonGrammar(llama: Llama, schema: GrammarSchema): Promise<LlamaGrammar> {
  return llama.createGrammarForJsonSchema<GbnfJsonSchema>(schema);
}

/**
 * A JSON schema (or part of one) that the grammar could not enforce, or that is not a valid schema.
 * An INVALID_ARGUMENT AppError whose `field` is the schema path, so `toOpenAiError` answers it as a
 * 400 with `param` set to the path.
 */
export class JsonSchemaUnsupportedError extends AppError {
  constructor(
    /** Where in the request, e.g. `response_format.json_schema.schema.properties.age.minimum`. */
    readonly path: string,
    why: string,
  ) {
    super("INVALID_ARGUMENT", "UNSUPPORTED_JSON_SCHEMA", `${path}: ${why}`, { field: path });
  }
}

/** One way an answer breaks the schema: where in the answer (a JSON pointer, "" for the root) and how. */
export interface SchemaViolation {
  readonly instancePath: string;
  readonly message: string;
}

/** Checks a parsed answer; no violations means it is valid. */
export type AnswerValidator = (answer: unknown) => readonly SchemaViolation[];

/** Any JSON value, as node-llama-cpp can say it (a bare `{}` would be null-only there). */
export const ANY_JSON: GrammarSchema = Object.freeze({
  oneOf: Object.freeze([
    Object.freeze({ type: Object.freeze(["string", "number", "boolean", "null"] as const) }),
    Object.freeze({ type: "array" as const }),
    Object.freeze({ type: "object" as const, additionalProperties: true }),
  ]),
});

/** Any JSON object: the grammar of `response_format: {type: "json_object"}`. */
export const ANY_JSON_OBJECT: GrammarSchema = Object.freeze({ type: "object" as const, additionalProperties: true });

/**
 * The response format of a chat completion, read from OpenAI's `response_format`.
 *
 * For both JSON kinds the caller builds the grammar with
 * `await createJsonGrammar(llama, format.grammarSchema)`, i.e.
 * `llama.createGrammarForJsonSchema<GbnfJsonSchema>(format.grammarSchema)`,
 * samples with `new LlamaGrammarEvaluationState({ model, grammar })` as `grammarEvaluationState`,
 * and checks `format.validate(JSON.parse(answer))`. For `json_object`,
 * `await llama.getGrammarFor("json")` (llama.cpp's json.gbnf, whose root is an object) would do as
 * well; `ANY_JSON_OBJECT` keeps one code path. A schema grammar requires four newlines after the
 * JSON (then allows more newlines or the end), and names them in `grammar.stopGenerationTriggers`,
 * which only LlamaChat acts on: with `sequence.evaluate`, stop at `"\n\n\n\n"` and trim the
 * answer's trailing whitespace. Do not use `LlamaJsonSchemaGrammar.parse`: it checks the
 * normalised schema, not the user's.
 */
export type ResponseFormat =
  | { readonly kind: "text" }
  | { readonly kind: "json_object"; readonly grammarSchema: GrammarSchema; readonly validate: AnswerValidator }
  | {
      readonly kind: "json_schema";
      readonly name: string;
      /** OpenAI's `strict`. Informational: the grammar is always strict, and refuses what it cannot enforce. */
      readonly strict: boolean;
      readonly grammarSchema: GrammarSchema;
      readonly validate: AnswerValidator;
    };

/**
 * Reads OpenAI's `response_format` (`undefined`/`null` means text). Throws
 * JsonSchemaUnsupportedError, naming the field, for a malformed format or a schema the grammar
 * cannot enforce.
 */
export function responseFormatOf(responseFormat: unknown, path = "response_format"): ResponseFormat {
  if (responseFormat === undefined || responseFormat === null) return { kind: "text" };
  if (!isPlainObject(responseFormat)) throw new JsonSchemaUnsupportedError(path, "must be an object");
  switch (responseFormat["type"]) {
    case "text":
      return { kind: "text" };
    case "json_object":
      return { kind: "json_object", grammarSchema: ANY_JSON_OBJECT, validate: validateJsonObject };
    case "json_schema": {
      const spec = responseFormat["json_schema"];
      const specPath = `${path}.json_schema`;
      if (!isPlainObject(spec)) throw new JsonSchemaUnsupportedError(specPath, "is required with type json_schema and must be an object");
      const name = spec["name"];
      if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(name))
        throw new JsonSchemaUnsupportedError(`${specPath}.name`, "must be 1 to 64 letters, digits, underscores or dashes");
      const strict = spec["strict"];
      if (strict !== undefined && strict !== null && typeof strict !== "boolean") throw new JsonSchemaUnsupportedError(`${specPath}.strict`, "must be a boolean");
      if (spec["schema"] === undefined) throw new JsonSchemaUnsupportedError(`${specPath}.schema`, "is required by this gateway");
      const schemaPath = `${specPath}.schema`;
      // Normalising first refuses what the grammar cannot enforce (pattern included) with a precise
      // path, before ajv ever compiles the user's schema.
      const grammarSchema = normaliseJsonSchema(spec["schema"], schemaPath);
      return { kind: "json_schema", name, strict: strict === true, grammarSchema, validate: compileValidator(spec["schema"], schemaPath) };
    }
    default:
      throw new JsonSchemaUnsupportedError(`${path}.type`, "must be text, json_object or json_schema");
  }
}

const validateJsonObject: AnswerValidator = (answer) => (isPlainObject(answer) ? [] : [{ instancePath: "", message: "must be a JSON object" }]);

/**
 * Rewrites an OpenAI-style JSON schema (draft 2020-12) into a schema node-llama-cpp enforces in
 * full. Mapped: `anyOf` (and `oneOf` whose branches cannot overlap) to `oneOf`; `type: [a, b]` to
 * one branch per type with the keywords that apply to it; `$ref` to `#/...` inlined; `allOf` of
 * one schema; `{}`/`true` to any JSON; `{type: "object"}` without properties to any object;
 * optional properties to one variant per subset; object/array `const` and `enum` values to
 * schemas; `items: false` to `maxItems`. Dropped as harmless: `title`, `description`, `$comment`,
 * `examples`, `default`, `deprecated`, `readOnly`, `writeOnly`, `uniqueItems: false`, and `$schema`
 * and `$id` at the root. Everything else the grammar would not enforce throws
 * JsonSchemaUnsupportedError naming the keyword's path under `path`.
 */
export function normaliseJsonSchema(schema: unknown, path = RESPONSE_SCHEMA_PATH): GrammarSchema {
  const out = new Normaliser(schema, path).run();
  const size = grammarNodes(out, new Map());
  if (size > MAX_GRAMMAR_NODES)
    throw new JsonSchemaUnsupportedError(path, `the grammar would have ${size} schema nodes once $ref and optional properties are expanded (at most ${MAX_GRAMMAR_NODES}); simplify the schema`);
  return out;
}

/**
 * Compiles the user's original schema (draft 2020-12, ajv 8) into a validator for parsed answers;
 * call it on schemas `normaliseJsonSchema` accepted (it refuses `pattern`, whose regular
 * expressions ajv would otherwise run). Formats: only date, time and date-time (RFC 3339, the ones
 * the grammar knows). A schema ajv cannot compile throws JsonSchemaUnsupportedError with its path.
 */
export function compileValidator(schema: unknown, path = RESPONSE_SCHEMA_PATH): AnswerValidator {
  // `$schema` names a dialect ajv would have to load; the dialect here is always 2020-12.
  const source = isPlainObject(schema) ? withoutKey(schema, "$schema") : schema;
  if (typeof source !== "boolean" && !isPlainObject(source)) throw new JsonSchemaUnsupportedError(path, "a schema must be an object");
  metaAjv ??= new Ajv2020(AJV_OPTIONS);
  if (!metaAjv.validateSchema(source)) {
    const worst = [...(metaAjv.errors ?? [])].sort((a, b) => b.instancePath.length - a.instancePath.length)[0];
    const where = worst === undefined ? path : pointerToPath(path, worst.instancePath);
    throw new JsonSchemaUnsupportedError(where, `is not a valid JSON Schema: ${worst?.message ?? "invalid"}`);
  }
  let check: ReturnType<Ajv2020["compile"]>;
  try {
    // A new instance per schema (about 3 ms with the meta-schema check done above): ajv keeps every
    // schema it compiled, and a shared instance would grow with each request's schema and let one
    // schema's $id clash with, or remove, another's.
    check = new Ajv2020({ ...AJV_OPTIONS, validateSchema: false }).compile(source);
  } catch (err) {
    throw new JsonSchemaUnsupportedError(path, `is not a schema ajv can compile: ${err instanceof Error ? err.message : String(err)}`);
  }
  return (answer) => (check(answer) ? [] : (check.errors ?? []).map(violation));
}

const AJV_OPTIONS = {
  allErrors: true,
  strict: true,
  strictTypes: false,
  strictTuples: false,
  strictRequired: false,
  logger: false,
  formats: { date: isRfc3339Date, time: isRfc3339Time, "date-time": isRfc3339DateTime },
} as const;

/** Checks user schemas against the 2020-12 meta-schema, which it compiles once; it never holds a user schema. */
let metaAjv: Ajv2020 | undefined;

function violation(e: ErrorObject): SchemaViolation {
  const extra = e.keyword === "additionalProperties" ? `: ${JSON.stringify((e.params as { additionalProperty?: string }).additionalProperty)}` : "";
  return { instancePath: e.instancePath, message: `${e.message ?? "is invalid"}${extra}` };
}

// --- normalisation -------------------------------------------------------------------------

const TYPES: ReadonlySet<string> = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const SCALARS: ReadonlySet<string> = new Set(["string", "number", "integer", "boolean", "null"]);
const FORMATS: ReadonlySet<string> = new Set(["date", "time", "date-time"]);
const ANNOTATIONS: ReadonlySet<string> = new Set(["title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"]);
const ROOT_ONLY: ReadonlySet<string> = new Set(["$schema", "$id"]);
const COMBINATORS: ReadonlySet<string> = new Set(["$ref", "allOf", "anyOf", "oneOf", "enum", "const", "type"]);
/** The keywords that constrain one type only, and that type. */
const TYPE_KEYWORDS: ReadonlyMap<string, "string" | "object" | "array"> = new Map([
  ["minLength", "string"],
  ["maxLength", "string"],
  ["format", "string"],
  ["properties", "object"],
  ["required", "object"],
  ["additionalProperties", "object"],
  ["minProperties", "object"],
  ["maxProperties", "object"],
  ["items", "array"],
  ["prefixItems", "array"],
  ["minItems", "array"],
  ["maxItems", "array"],
  ["uniqueItems", "array"],
]);
/** Keywords the grammar cannot enforce, with what to do instead when there is something better than removing them. */
const UNENFORCED: ReadonlyMap<string, string> = new Map(
  Object.entries({
  pattern: "",
  minimum: "",
  maximum: "",
  exclusiveMinimum: "",
  exclusiveMaximum: "",
  multipleOf: "",
  not: "",
  if: "",
  then: "",
  else: "",
  patternProperties: "",
  propertyNames: "",
  dependentRequired: "",
  dependentSchemas: "",
  dependencies: "",
  unevaluatedProperties: "",
  unevaluatedItems: "",
  contains: "",
  minContains: "",
  maxContains: "",
  contentEncoding: "",
  contentMediaType: "",
  contentSchema: "",
  additionalItems: " (it is draft-07 tuple syntax; use prefixItems and items)",
  nullable: ' (it is OpenAPI, not JSON Schema; use type: [T, "null"] or anyOf)',
  $anchor: "; refer to $defs with $ref instead",
  $dynamicRef: "",
  $dynamicAnchor: "",
  $recursiveRef: "",
  $recursiveAnchor: "",
  $vocabulary: "",
  }),
);

class Normaliser {
  private nodes = 0;
  /** Schemas being inlined, outermost first: one met again is a recursive reference. */
  private readonly expanding: unknown[];
  /** The `$ref`s that led to the schema being normalised, for messages. */
  private readonly via: string[] = [];

  constructor(
    private readonly root: unknown,
    private readonly base: string,
  ) {
    this.expanding = [root];
  }

  run(): GrammarSchema {
    return this.node(this.root, this.base, true);
  }

  private refuse(path: string, why: string): never {
    const via = this.via.at(-1);
    throw new JsonSchemaUnsupportedError(path, via === undefined ? why : `${why} (reached through the $ref at ${via})`);
  }

  private node(schema: unknown, path: string, isRoot = false): GrammarSchema {
    if (++this.nodes > MAX_GRAMMAR_NODES) this.refuse(path, `the schema has more than ${MAX_GRAMMAR_NODES} nodes once $ref is inlined; simplify it`);
    if (schema === true) return ANY_JSON;
    if (schema === false) this.refuse(path, "the schema false admits no value");
    if (!isPlainObject(schema)) this.refuse(path, "a schema must be an object");

    const constraints: string[] = [];
    for (const key of Object.keys(schema)) {
      if (ANNOTATIONS.has(key) || (isRoot && ROOT_ONLY.has(key))) continue;
      if (ROOT_ONLY.has(key)) this.refuse(child(path, key), `${key} is supported only at the root of the schema`);
      const unenforced = UNENFORCED.get(key);
      if (unenforced !== undefined) this.refuse(child(path, key), `${key} is not enforced by the grammar${unenforced}; remove it or validate after`);
      if (!COMBINATORS.has(key) && !TYPE_KEYWORDS.has(key)) this.refuse(child(path, key), `unknown keyword ${JSON.stringify(key)}: the grammar would ignore it; remove it`);
      constraints.push(key);
    }
    const has = (key: string): boolean => constraints.includes(key);

    if (has("$ref")) return this.ref(schema, constraints, path);
    if (has("allOf")) {
      this.alone(constraints, "allOf", path);
      const all = schema["allOf"];
      if (!Array.isArray(all) || all.length !== 1)
        this.refuse(child(path, "allOf"), "allOf of more than one schema is not enforced by the grammar; merge them into one schema");
      return this.node(all[0], index(child(path, "allOf"), 0));
    }
    if (has("anyOf") || has("oneOf")) return this.alternatives(schema, constraints, path);
    if (has("enum") || has("const")) return this.literals(schema, constraints, path);
    if (!has("type")) {
      if (constraints.length > 0)
        this.refuse(path, `has ${constraints[0]} but no type, so a value of any other type would be valid; add "type"`);
      return ANY_JSON;
    }
    return this.typed(schema, constraints, path);
  }

  /** Refuses the constraints beside a keyword that must stand alone (annotations aside). */
  private alone(constraints: readonly string[], keyword: string, path: string): void {
    const other = constraints.find((k) => k !== keyword);
    if (other !== undefined) this.refuse(child(path, other), `${other} beside ${keyword} is not supported; move it into the schema(s) of ${keyword}`);
  }

  private ref(schema: Record<string, unknown>, constraints: readonly string[], path: string): GrammarSchema {
    this.alone(constraints, "$ref", path);
    const refPath = child(path, "$ref");
    const ref = schema["$ref"];
    if (typeof ref !== "string" || !ref.startsWith("#")) this.refuse(refPath, "only references inside the schema (#/$defs/…) are supported");
    const target = resolvePointer(this.root, ref.slice(1));
    if (target === undefined) this.refuse(refPath, `${ref} does not resolve to a schema in this document`);
    if (this.expanding.includes(target.value))
      this.refuse(refPath, `${ref} is recursive; recursive schemas cannot be inlined into the grammar`);
    this.expanding.push(target.value);
    this.via.push(refPath);
    try {
      return this.node(target.value, target.segments.reduce<string>((p, s) => child(p, s), this.base));
    } finally {
      this.expanding.pop();
      this.via.pop();
    }
  }

  private alternatives(schema: Record<string, unknown>, constraints: readonly string[], path: string): GrammarSchema {
    const keyword = constraints.includes("anyOf") ? "anyOf" : "oneOf";
    this.alone(constraints, keyword, path);
    const list = schema[keyword];
    const listPath = child(path, keyword);
    if (!Array.isArray(list) || list.length === 0) this.refuse(listPath, "must be a non-empty array of schemas");
    const branches = list.map((branch, i) => this.node(branch, index(listPath, i)));
    // node-llama-cpp's oneOf is a plain alternative: it allows a value that two branches match,
    // which JSON Schema's oneOf forbids. So oneOf passes only when no value can match two branches.
    if (keyword === "oneOf")
      for (let i = 0; i < branches.length; i++)
        for (let j = i + 1; j < branches.length; j++)
          if (!disjoint(branches[i]!, branches[j]!))
            this.refuse(listPath, `branches ${i} and ${j} may match the same value, and the grammar cannot enforce "exactly one"; use anyOf, or tell the branches apart (e.g. by a const property)`);
    return union(branches);
  }

  private literals(schema: Record<string, unknown>, constraints: readonly string[], path: string): GrammarSchema {
    const other = constraints.find((k) => k !== "enum" && k !== "const" && k !== "type");
    if (other !== undefined) this.refuse(child(path, other), `${other} beside enum or const is not supported; list only the values that satisfy it`);
    let values: { value: unknown; path: string }[] = [];
    if (constraints.includes("enum")) {
      const list = schema["enum"];
      if (!Array.isArray(list) || list.length === 0) this.refuse(child(path, "enum"), "must be a non-empty array");
      values = list.map((value, i) => ({ value, path: index(child(path, "enum"), i) }));
    }
    if (constraints.includes("const")) {
      const only = { value: schema["const"], path: child(path, "const") };
      values = constraints.includes("enum") ? values.filter((v) => jsonEqual(v.value, only.value)) : [only];
    }
    if (constraints.includes("type")) {
      const types = this.types(schema["type"], child(path, "type"));
      values = values.filter((v) => types.some((t) => matchesType(v.value, t)));
    }
    values = values.filter((v, i) => values.findIndex((w) => jsonEqual(w.value, v.value)) === i);
    if (values.length === 0) this.refuse(path, "no value of enum/const satisfies the rest of the schema, so it admits nothing");
    const scalars: GrammarLiteral[] = [];
    const composites: GrammarSchema[] = [];
    for (const v of values) {
      const literal = this.literal(v.value, v.path);
      if ("const" in literal) scalars.push(literal.const);
      else composites.push(literal);
    }
    const first: GrammarSchema[] = scalars.length === 0 ? [] : scalars.length === 1 ? [{ const: scalars[0]! }] : [{ enum: scalars }];
    return union([...first, ...composites]);
  }

  /** A schema that admits exactly this JSON value. */
  private literal(value: unknown, path: string): GrammarSchema {
    if (value === null || typeof value === "boolean") return { const: value };
    if (typeof value === "number") {
      if (!Number.isFinite(value)) this.refuse(path, "is not a JSON number");
      return { const: value };
    }
    if (typeof value === "string") return { const: this.grammarString(value, path) };
    if (Array.isArray(value)) {
      const items = value.map((item, i) => this.literal(item, index(path, i)));
      return items.length === 0 ? { type: "array", maxItems: 0 } : { type: "array", prefixItems: items, minItems: items.length, maxItems: items.length };
    }
    if (isPlainObject(value))
      return { type: "object", properties: Object.fromEntries(Object.entries(value).map(([k, v]) => [this.grammarString(k, path), this.literal(v, child(path, k))])) };
    return this.refuse(path, "is not a JSON value");
  }

  /** node-llama-cpp writes literal strings into the grammar escaping only \\, ", \t, \r and \n. */
  private grammarString(value: string, path: string): string {
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(value)) this.refuse(path, `${JSON.stringify(value)} holds a control character the grammar cannot write`);
    return value;
  }

  private types(type: unknown, path: string): string[] {
    const list = Array.isArray(type) ? type : [type];
    if (list.length === 0 || list.some((t) => typeof t !== "string" || !TYPES.has(t)) || new Set(list).size !== list.length)
      this.refuse(path, "must be one of string, number, integer, boolean, null, object, array, or an array of distinct ones");
    return list as string[];
  }

  private typed(schema: Record<string, unknown>, constraints: readonly string[], path: string): GrammarSchema {
    const types = this.types(schema["type"], child(path, "type"));
    for (const key of constraints) {
      const applies = TYPE_KEYWORDS.get(key);
      if (applies !== undefined && !types.includes(applies))
        this.refuse(child(path, key), `${key} applies only to ${applies}s, and type is ${types.join(" or ")}`);
    }
    const branches: GrammarSchema[] = [];
    for (const type of types) {
      if (type === "object") branches.push(this.object(schema, path));
      else if (type === "array") branches.push(this.array(schema, path));
      else if (type === "string") branches.push(this.string(schema, path));
      else branches.push({ type: type as ScalarType });
    }
    return union(branches);
  }

  private count(schema: Record<string, unknown>, key: string, path: string): number | undefined {
    const value = schema[key];
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) this.refuse(child(path, key), "must be a non-negative integer");
    return value;
  }

  private string(schema: Record<string, unknown>, path: string): GrammarSchema {
    const format = schema["format"];
    const minLength = this.count(schema, "minLength", path) ?? 0;
    const maxLength = this.count(schema, "maxLength", path);
    if (format !== undefined) {
      if (typeof format !== "string" || !FORMATS.has(format))
        this.refuse(child(path, "format"), `format ${JSON.stringify(format)} is not enforced by the grammar (it knows date, time and date-time); remove it or validate after`);
      const length = ["minLength", "maxLength"].find((k) => schema[k] !== undefined);
      if (length !== undefined) this.refuse(child(path, length), `${length} beside format is not enforced by the grammar; remove it`);
      return { type: "string", format: format as "date" | "time" | "date-time" };
    }
    if (maxLength !== undefined && maxLength < minLength) this.refuse(child(path, "maxLength"), `maxLength ${maxLength} is below minLength ${minLength}, so no string fits`);
    return { type: "string", ...(minLength > 0 ? { minLength } : {}), ...(maxLength !== undefined ? { maxLength } : {}) };
  }

  private object(schema: Record<string, unknown>, path: string): GrammarSchema {
    const propsPath = child(path, "properties");
    const declared = schema["properties"] ?? {};
    if (!isPlainObject(declared)) this.refuse(propsPath, "must be an object of schemas");
    const properties = new Map<string, GrammarSchema>();
    for (const [key, value] of Object.entries(declared)) properties.set(this.grammarString(key, propsPath), this.node(value, child(propsPath, key)));

    const requiredPath = child(path, "required");
    const requiredList = schema["required"] ?? [];
    if (!Array.isArray(requiredList) || requiredList.some((k) => typeof k !== "string")) this.refuse(requiredPath, "must be an array of property names");
    const required = new Set(requiredList as string[]);
    requiredList.forEach((name, i) => {
      if (!properties.has(name as string))
        this.refuse(index(requiredPath, i), `${JSON.stringify(name)} is required but not in properties, and the grammar emits only the listed properties`);
    });

    const minProperties = this.count(schema, "minProperties", path) ?? 0;
    const maxProperties = this.count(schema, "maxProperties", path);
    const extraPath = child(path, "additionalProperties");
    const extra = schema["additionalProperties"];
    const extraSchema = extra === undefined || extra === false ? undefined : this.node(extra, extraPath);

    if (properties.size === 0 && (extra === undefined || extraSchema !== undefined)) {
      // No declared property: a map of any keys (node-llama-cpp would otherwise allow only `{}`).
      if (minProperties > 0)
        this.refuse(child(path, "minProperties"), "minProperties is not enforced by the grammar on an object of free keys: a repeated key counts twice while generating and once after parsing");
      return {
        type: "object",
        additionalProperties: extraSchema === undefined || extraSchema === ANY_JSON ? true : extraSchema,
        ...(maxProperties !== undefined ? { maxProperties } : {}),
      };
    }
    if (extraSchema !== undefined)
      this.refuse(extraPath, "additionalProperties beside properties is not enforced by the grammar: an extra key could repeat a declared one and override its value; set it to false");

    // Closed object (an absent additionalProperties is read as false, as OpenAI's strict mode asks).
    const keys = [...properties.keys()];
    const optional = keys.filter((k) => !required.has(k));
    if (optional.length > MAX_OPTIONAL_PROPERTIES)
      this.refuse(
        requiredPath,
        `${optional.length} properties are optional (${optional.join(", ")}), and the grammar offers at most ${MAX_OPTIONAL_PROPERTIES} optional properties per object (one variant per subset); list more of them in required`,
      );
    const variants: GrammarSchema[] = [];
    for (let mask = (1 << optional.length) - 1; mask >= 0; mask--) {
      const present = keys.filter((k) => required.has(k) || (mask & (1 << optional.indexOf(k))) !== 0);
      if (present.length < minProperties || (maxProperties !== undefined && present.length > maxProperties)) continue;
      variants.push({ type: "object", properties: Object.fromEntries(present.map((k) => [k, properties.get(k)!])) });
    }
    if (variants.length === 0) this.refuse(path, "minProperties and maxProperties leave no allowed set of properties");
    return union(variants);
  }

  private array(schema: Record<string, unknown>, path: string): GrammarSchema {
    const itemsPath = child(path, "items");
    const items = schema["items"];
    if (Array.isArray(items)) this.refuse(itemsPath, "items as an array is draft-07 tuple syntax; use prefixItems");
    const unique = schema["uniqueItems"];
    if (unique !== undefined && unique !== false) this.refuse(child(path, "uniqueItems"), "uniqueItems is not enforced by the grammar; remove it or validate after");
    const prefixPath = child(path, "prefixItems");
    const prefixList = schema["prefixItems"] ?? [];
    if (!Array.isArray(prefixList)) this.refuse(prefixPath, "must be an array of schemas");
    let prefix = prefixList.map((item, i) => this.node(item, index(prefixPath, i)));
    const itemSchema = items === undefined || items === false ? undefined : this.node(items, itemsPath);
    const minItems = this.count(schema, "minItems", path) ?? 0;
    let maxItems = this.count(schema, "maxItems", path);
    if (items === false) maxItems = Math.min(maxItems ?? prefix.length, prefix.length);
    if (maxItems !== undefined && maxItems < minItems) this.refuse(child(path, "maxItems"), `maxItems ${maxItems} is below minItems ${minItems}, so no array fits`);
    // Positions past maxItems never exist; node-llama-cpp would instead raise maxItems to fit them.
    if (maxItems !== undefined && prefix.length > maxItems) prefix = prefix.slice(0, maxItems);
    return {
      type: "array",
      ...(prefix.length > 0 ? { prefixItems: prefix } : {}),
      ...(itemSchema !== undefined && itemSchema !== ANY_JSON ? { items: itemSchema } : {}),
      ...(minItems > 0 ? { minItems } : {}),
      ...(maxItems !== undefined ? { maxItems } : {}),
    };
  }
}

/** One alternative for several schemas: nested alternatives flattened, bare scalar types merged into one type list. */
function union(branches: readonly GrammarSchema[]): GrammarSchema {
  const flat = branches.flatMap((b) => ("oneOf" in b ? b.oneOf : [b]));
  const scalars: ScalarType[] = [];
  const rest: GrammarSchema[] = [];
  for (const b of flat) {
    const bare = bareScalars(b);
    if (bare === undefined) rest.push(b);
    else for (const t of bare) if (!scalars.includes(t)) scalars.push(t);
  }
  // number already admits every integer.
  const merged = scalars.includes("number") ? scalars.filter((t) => t !== "integer") : scalars;
  const all: GrammarSchema[] = merged.length === 0 ? rest : [{ type: merged.length === 1 ? merged[0]! : merged }, ...rest];
  return all.length === 1 ? all[0]! : { oneOf: all };
}

function bareScalars(schema: GrammarSchema): readonly ScalarType[] | undefined {
  if (!("type" in schema) || Object.keys(schema).length !== 1) return undefined;
  const types: readonly string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.every((t) => SCALARS.has(t)) ? (types as ScalarType[]) : undefined;
}

type Kind = "string" | "number" | "boolean" | "null" | "object" | "array";

/** Whether no JSON value can match both schemas; false when unsure. */
function disjoint(a: GrammarSchema, b: GrammarSchema): boolean {
  if ("oneOf" in a) return a.oneOf.every((x) => disjoint(x, b));
  if ("oneOf" in b) return b.oneOf.every((y) => disjoint(a, y));
  const la = literalsOf(a);
  const lb = literalsOf(b);
  if (la !== undefined && lb !== undefined) return la.every((x) => !lb.includes(x));
  if (la !== undefined) return la.every((x) => !mayAdmit(b, x));
  if (lb !== undefined) return lb.every((y) => !mayAdmit(a, y));
  const kb = kindsOf(b);
  const shared = kindsOf(a).filter((k) => kb.includes(k));
  if (shared.length === 0) return true;
  if (shared.length === 1 && shared[0] === "object" && "type" in a && a.type === "object" && "type" in b && b.type === "object") return objectsDisjoint(a, b);
  return false;
}

function objectsDisjoint(a: Extract<GrammarSchema, { type: "object" }>, b: Extract<GrammarSchema, { type: "object" }>): boolean {
  const pa = a.properties ?? {};
  const pb = b.properties ?? {};
  const closed = (a.additionalProperties ?? false) === false && (b.additionalProperties ?? false) === false;
  const ka = Object.keys(pa).sort();
  const kb = Object.keys(pb).sort();
  // Closed objects emit exactly their keys: different key sets never meet.
  if (closed && (ka.length !== kb.length || ka.some((k, i) => k !== kb[i]))) return true;
  return ka.some((k) => Object.hasOwn(pb, k) && disjoint(pa[k]!, pb[k]!));
}

function literalsOf(schema: GrammarSchema): readonly GrammarLiteral[] | undefined {
  if ("const" in schema) return [schema.const];
  if ("enum" in schema) return schema.enum;
  return undefined;
}

function kindsOf(schema: GrammarSchema): Kind[] {
  if (!("type" in schema)) return ["string", "number", "boolean", "null", "object", "array"];
  const types: readonly string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.map((t) => (t === "integer" ? "number" : (t as Kind)));
}

function mayAdmit(schema: GrammarSchema, value: GrammarLiteral): boolean {
  if (!("type" in schema)) return true;
  const types: readonly string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.some((t) => matchesType(value, t));
}

/** Schema nodes as node-llama-cpp walks them: a schema shared by several parents counts once per parent. */
function grammarNodes(schema: GrammarSchema, memo: Map<GrammarSchema, number>): number {
  const known = memo.get(schema);
  if (known !== undefined) return known;
  let n = 1;
  const add = (s: GrammarSchema | boolean | undefined): void => {
    if (typeof s === "object") n += grammarNodes(s, memo);
  };
  if ("oneOf" in schema) schema.oneOf.forEach(add);
  if ("properties" in schema) Object.values(schema.properties ?? {}).forEach(add);
  if ("additionalProperties" in schema) add(schema.additionalProperties);
  if ("items" in schema) add(schema.items);
  if ("prefixItems" in schema) (schema.prefixItems ?? []).forEach(add);
  memo.set(schema, n);
  return n;
}

// --- JSON helpers --------------------------------------------------------------------------

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function withoutKey(object: Record<string, unknown>, key: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(object).filter(([k]) => k !== key));
}

function matchesType(value: unknown, type: string): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number";
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "boolean":
      return typeof value === "boolean";
    case "null":
      return value === null;
    case "object":
      return isPlainObject(value);
    case "array":
      return Array.isArray(value);
    default:
      return false;
  }
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/** A JSON pointer (already without its leading "#") inside `root`, with its decoded segments. */
function resolvePointer(root: unknown, pointer: string): { value: unknown; segments: string[] } | undefined {
  if (pointer === "") return { value: root, segments: [] };
  if (!pointer.startsWith("/")) return undefined;
  let segments: string[];
  try {
    segments = pointer
      .slice(1)
      .split("/")
      .map((s) => decodeURIComponent(s).replaceAll("~1", "/").replaceAll("~0", "~"));
  } catch {
    return undefined;
  }
  let value: unknown = root;
  for (const segment of segments) {
    if (Array.isArray(value) && /^(0|[1-9][0-9]*)$/.test(segment) && Number(segment) < value.length) value = value[Number(segment)];
    else if (isPlainObject(value) && Object.hasOwn(value, segment)) value = value[segment];
    else return undefined;
  }
  return { value, segments };
}

/** `path.key`, `path[3]` for an index, `path["odd key"]` for a key that is no identifier. */
function child(path: string, key: string): string {
  if (/^(0|[1-9][0-9]*)$/.test(key)) return index(path, Number(key));
  return /^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

function pointerToPath(base: string, pointer: string): string {
  if (pointer === "") return base;
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"))
    .reduce<string>((p, s) => child(p, s), base);
}

// --- formats: RFC 3339, as JSON Schema defines date, time and date-time ----------------------

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function isRfc3339Date(s: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (m === null) return false;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return month >= 1 && month <= 12 && day >= 1 && day <= (month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!);
}

function isRfc3339Time(s: string): boolean {
  const m = /^(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:z|[+-](\d{2}):(\d{2}))$/i.exec(s);
  if (m === null) return false;
  const [hour, minute, second] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // A leap second is 60.
  const offsetOk = m[4] === undefined || (Number(m[4]) <= 23 && Number(m[5]) <= 59);
  return hour <= 23 && minute <= 59 && second <= 60 && offsetOk;
}

function isRfc3339DateTime(s: string): boolean {
  return (s[10] === "T" || s[10] === "t") && isRfc3339Date(s.slice(0, 10)) && isRfc3339Time(s.slice(11));
}
