// Format checks of generated answers — exact match, regular expression, JSON, JSON Schema — and
// length statistics, for the evaluator's format-compliance and exact-match metrics.
//
// A check that is given a broken definition (a pattern that does not compile, a schema ajv
// refuses) throws InvalidFormatCheckError once, when it is compiled; a check of an answer never
// throws, it says whether the answer passes.

import { Ajv2020 } from "ajv/dist/2020.js";
import { percentile } from "./stats.js";

/** A format check whose definition is unusable: the pattern or the schema, and why. */
export class InvalidFormatCheckError extends Error {
  override readonly name = "InvalidFormatCheckError";
  constructor(
    /** Which part of the definition is wrong. */
    readonly part: "pattern" | "flags" | "schema",
    /** The reason, without the definition itself. */
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** Options of {@link exactMatch}. */
export interface ExactMatchOptions {
  /**
   * Whether to compare normalised texts: Unicode NFKC, lower case, every whitespace run as one
   * space. Default false: only surrounding whitespace is trimmed.
   */
  normalize?: boolean;
}

/**
 * Whether the prediction equals the reference once surrounding whitespace is trimmed from both
 * (and, with `normalize`, both are normalised; see {@link ExactMatchOptions}).
 */
export function exactMatch(prediction: string, reference: string, opts: ExactMatchOptions = {}): boolean {
  const clean = opts.normalize ? normalizeForMatch : (s: string) => s.trim();
  return clean(prediction) === clean(reference);
}

function normalizeForMatch(s: string): string {
  return s.normalize("NFKC").toLowerCase().replace(/\s+/gu, " ").trim();
}

/** Options of {@link regexCompliance} and {@link compileRegexCheck}. */
export interface RegexOptions {
  /**
   * "search": some part of the answer matches, like Python's `re.search`. "full": the whole
   * answer matches, like `re.fullmatch` (what `lathe.type.v1.FormatCheck` specifies for
   * `FORMAT_KIND_REGEX`). Default "search".
   */
  mode?: "full" | "search";
  /**
   * ECMAScript flags. `g` and `y` are ignored, as they would make one answer's check depend on
   * the previous one's. Default "u", as `FormatCheck` specifies.
   */
  flags?: string;
}

/**
 * Compiles a regular-expression check once, for many answers. Throws InvalidFormatCheckError,
 * naming the pattern, when the pattern or the flags do not compile.
 */
export function compileRegexCheck(pattern: string, opts: RegexOptions = {}): (prediction: string) => boolean {
  const mode = opts.mode ?? "search";
  if (mode !== "full" && mode !== "search") throw new RangeError(`regex mode must be "full" or "search", got ${JSON.stringify(mode)}`);
  const flags = (opts.flags ?? "u").replace(/[gy]/g, "");
  try {
    new RegExp("", flags);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new InvalidFormatCheckError("flags", reason, `the regular expression flags "${flags}" of ${quotePattern(pattern)} are invalid: ${reason}`);
  }
  let search: RegExp;
  try {
    search = new RegExp(pattern, flags);
  } catch (err) {
    // V8 writes "Invalid regular expression: /<pattern>/<flags>: <reason>"; keep the reason only,
    // as the pattern may be long and the message shows it once, shortened.
    const message = err instanceof Error ? err.message : String(err);
    const prefix = `Invalid regular expression: /${pattern}/${flags}: `;
    const reason = message.startsWith(prefix) ? message.slice(prefix.length) : message;
    throw new InvalidFormatCheckError("pattern", reason, `the regular expression ${quotePattern(pattern)} (flags "${flags}") does not compile: ${reason}`);
  }
  if (mode === "search") return (prediction) => search.test(prediction);
  // The pattern compiled on its own, so it is balanced and the group holds all of it. The
  // lookarounds anchor at the ends of the text whatever the flags (`^`/`$` would follow `m`), and
  // unlike a check that the first match spans the text they let alternation backtrack: `a|ab`
  // fully matches "ab".
  const full = new RegExp(`(?<![\\s\\S])(?:${pattern})(?![\\s\\S])`, flags);
  return (prediction) => full.test(prediction);
}

/**
 * Whether the prediction matches the pattern (see {@link RegexOptions} for the mode and flags).
 * Compiles the pattern on every call; use {@link compileRegexCheck} for many answers. Throws
 * InvalidFormatCheckError when the pattern does not compile.
 */
export function regexCompliance(prediction: string, pattern: string, opts: RegexOptions = {}): boolean {
  return compileRegexCheck(pattern, opts)(prediction);
}

/** Options of the JSON checks. */
export interface JsonOptions {
  /**
   * Whether an answer wrapped in one Markdown code fence (```` ```json ```` or ```` ``` ````
   * with no language, closing ```` ``` ````) counts as its content, as chat models often answer.
   * Default false: the answer must be the JSON text itself.
   */
  allowCodeFence?: boolean;
}

/** The outcome of a JSON or JSON Schema check of one answer. */
export type JsonCheckResult = { valid: true; value: unknown; error: null } | { valid: false; value: null; error: string };

/**
 * Whether the prediction is one JSON value (RFC 8259, as `JSON.parse` reads it; surrounding
 * whitespace allowed), with the parsed value or why it is not.
 */
export function jsonCompliance(prediction: string, opts: JsonOptions = {}): JsonCheckResult {
  const text = opts.allowCodeFence ? unfence(prediction) : prediction;
  try {
    return { valid: true, value: JSON.parse(text) as unknown, error: null };
  } catch (err) {
    return { valid: false, value: null, error: `not valid JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
}

// One fence around the whole answer; the info string may only be "json" (any case) or empty.
const FENCE = /^\s*```[ \t]*(?:json)?[ \t]*\r?\n([\s\S]*?)\r?\n?```\s*$/iu;

function unfence(s: string): string {
  return FENCE.exec(s)?.[1] ?? s;
}

/**
 * Compiles a JSON Schema (draft 2020-12, ajv 8) once into a check of answers: the answer must be
 * JSON (see {@link jsonCompliance}) and valid against the schema; the error names the first
 * violation and where it is. The schema is a parsed schema (an object or a boolean) or its JSON
 * text. Remote `$ref`s are not fetched, and formats ajv does not know without ajv-formats (email,
 * uri…) are not checked. Throws InvalidFormatCheckError when the schema is not JSON or not a
 * valid draft 2020-12 schema.
 */
export function compileJsonSchemaCheck(schema: unknown, opts: JsonOptions = {}): (prediction: string) => JsonCheckResult {
  let source = schema;
  if (typeof schema === "string") {
    try {
      source = JSON.parse(schema) as unknown;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new InvalidFormatCheckError("schema", reason, `the JSON Schema is not valid JSON: ${reason}`);
    }
  }
  if (typeof source !== "boolean" && (typeof source !== "object" || source === null || Array.isArray(source)))
    throw new InvalidFormatCheckError("schema", "not an object or a boolean", "the JSON Schema must be an object or a boolean");
  let validate: ReturnType<Ajv2020["compile"]>;
  try {
    // A new instance per schema: ajv keeps every schema it compiled, and two schemas with the same
    // $id would clash in a shared one. strict: false, since an answer format is no place to refuse
    // a schema for an annotation ajv does not know.
    validate = new Ajv2020({ strict: false, allErrors: false, logger: false }).compile(source as object | boolean);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new InvalidFormatCheckError("schema", reason, `the JSON Schema is not a valid draft 2020-12 schema: ${reason}`);
  }
  return (prediction) => {
    const parsed = jsonCompliance(prediction, opts);
    if (!parsed.valid) return parsed;
    if (validate(parsed.value)) return parsed;
    const first = validate.errors?.[0];
    const where = first?.instancePath ? `at ${first.instancePath}` : "at the root";
    return { valid: false, value: null, error: `does not match the JSON Schema ${where}: ${first?.message ?? "invalid"}` };
  };
}

/**
 * Whether the prediction is JSON valid against the schema. Compiles the schema on every call; use
 * {@link compileJsonSchemaCheck} for many answers. Throws InvalidFormatCheckError on a bad schema.
 */
export function jsonSchemaCompliance(prediction: string, schema: unknown, opts: JsonOptions = {}): JsonCheckResult {
  return compileJsonSchemaCheck(schema, opts)(prediction);
}

/** A summary of lengths. Percentiles interpolate like numpy's default (see `percentile`). */
export interface LengthSummary {
  mean: number;
  p50: number;
  p95: number;
  min: number;
  max: number;
}

/** Length statistics of a set of texts. */
export interface LengthStats {
  /** How many texts. */
  count: number;
  /** Lengths in characters (Unicode code points, so an emoji counts once). */
  characters: LengthSummary;
  /** Lengths in whitespace-separated tokens (an empty or all-space text has 0). */
  tokens: LengthSummary;
}

/** Length statistics of the texts, in characters and whitespace tokens. Throws RangeError on no texts. */
export function lengthStats(texts: readonly string[]): LengthStats {
  if (texts.length === 0) throw new RangeError("lengthStats needs at least one text");
  const characters = texts.map(codePointLength);
  const tokens = texts.map((t) => t.split(/\s+/u).filter((w) => w !== "").length);
  return { count: texts.length, characters: summarize(characters), tokens: summarize(tokens) };
}

function codePointLength(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

function summarize(values: number[]): LengthSummary {
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { mean: sum / values.length, p50: percentile(values, 50), p95: percentile(values, 95), min, max };
}

function quotePattern(pattern: string): string {
  const shown = pattern.length > 200 ? `${pattern.slice(0, 200)}… (${pattern.length} characters)` : pattern;
  return `/${shown}/`;
}
