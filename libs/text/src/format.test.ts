import { describe, expect, it } from "vitest";
import {
  compileJsonSchemaCheck,
  compileRegexCheck,
  exactMatch,
  InvalidFormatCheckError,
  jsonCompliance,
  jsonSchemaCompliance,
  lengthStats,
  regexCompliance,
} from "./format.js";

describe("exactMatch", () => {
  it("ignores surrounding whitespace only, by default", () => {
    expect(exactMatch("  Paris\n", "Paris")).toBe(true);
    expect(exactMatch("paris", "Paris")).toBe(false);
    expect(exactMatch("New  York", "New York")).toBe(false);
  });

  it("with normalize, also ignores case, whitespace runs and Unicode compatibility forms", () => {
    expect(exactMatch("  NEW\t york ", "New York", { normalize: true })).toBe(true);
    expect(exactMatch("ＡＢＣ １２３", "abc 123", { normalize: true })).toBe(true);
    expect(exactMatch("New York.", "New York", { normalize: true })).toBe(false);
  });
});

describe("regexCompliance", () => {
  it("searches by default, like Python's re.search", () => {
    expect(regexCompliance("The answer is 42.", "\\d+")).toBe(true);
    expect(regexCompliance("no digits", "\\d+")).toBe(false);
  });

  it("in full mode needs the whole text to match, whatever the flags", () => {
    expect(regexCompliance("The answer is 42.", "\\d+", { mode: "full" })).toBe(false);
    expect(regexCompliance("42", "\\d+", { mode: "full" })).toBe(true);
    // `m` would let ^ and $ match at line breaks; full mode still anchors at the ends of the text.
    expect(regexCompliance("42\nextra", "^\\d+$", { mode: "full", flags: "mu" })).toBe(false);
    // Alternation backtracks to a full match, as re.fullmatch does.
    expect(regexCompliance("ab", "a|ab", { mode: "full" })).toBe(true);
  });

  it("uses the u flag by default and ignores g and y, so one answer's check does not affect the next", () => {
    expect(regexCompliance("😀", "^.$", { mode: "search" })).toBe(true);
    const check = compileRegexCheck("a", { flags: "gy" });
    expect([check("a"), check("a"), check("ba")]).toEqual([true, true, true]);
    expect(regexCompliance("YES", "yes", { flags: "iu" })).toBe(true);
  });

  it("refuses a pattern that does not compile, naming the pattern", () => {
    expect(() => regexCompliance("x", "(unclosed")).toThrow(InvalidFormatCheckError);
    expect(() => regexCompliance("x", "(unclosed")).toThrow('the regular expression /(unclosed/ (flags "u") does not compile: Unterminated group');
    // A broken pattern stays broken in full mode: it is compiled alone before it is wrapped.
    expect(() => compileRegexCheck("a)|(b", { mode: "full" })).toThrow(/the regular expression \/a\)\|\(b\//);
    try {
      compileRegexCheck("[", { flags: "u" });
      expect.fail("no error");
    } catch (err) {
      expect(err).toMatchObject({ name: "InvalidFormatCheckError", part: "pattern" });
    }
    expect(() => compileRegexCheck("a", { flags: "q" })).toThrow(expect.objectContaining({ part: "flags" }));
  });
});

describe("jsonCompliance", () => {
  it("accepts one JSON value with surrounding whitespace and returns it", () => {
    expect(jsonCompliance(' \n{"a": [1, 2]}\n')).toEqual({ valid: true, value: { a: [1, 2] }, error: null });
    expect(jsonCompliance("null")).toEqual({ valid: true, value: null, error: null });
  });

  it("rejects text that is not JSON, saying why", () => {
    const r = jsonCompliance('{"a": 1,}');
    expect(r.valid).toBe(false);
    expect(r.error).toMatch(/^not valid JSON: /);
    expect(jsonCompliance('Sure! {"a": 1}').valid).toBe(false);
    expect(jsonCompliance("").valid).toBe(false);
    expect(jsonCompliance("NaN").valid).toBe(false);
  });

  it("accepts an answer in a json code fence only when allowed", () => {
    const fenced = '```json\n{"a": 1}\n```';
    expect(jsonCompliance(fenced).valid).toBe(false);
    expect(jsonCompliance(fenced, { allowCodeFence: true })).toMatchObject({ valid: true, value: { a: 1 } });
    expect(jsonCompliance('\n```\n[1]\n```\n', { allowCodeFence: true })).toMatchObject({ valid: true, value: [1] });
    // Only a fence around the whole answer counts.
    expect(jsonCompliance('Here:\n```json\n{"a": 1}\n```', { allowCodeFence: true }).valid).toBe(false);
    expect(jsonCompliance('```python\n{"a": 1}\n```', { allowCodeFence: true }).valid).toBe(false);
  });
});

describe("jsonSchemaCompliance", () => {
  const schema = {
    type: "object",
    properties: { name: { type: "string" }, score: { type: "integer", minimum: 0 } },
    required: ["name", "score"],
    additionalProperties: false,
  };

  it("accepts JSON that matches the schema", () => {
    expect(jsonSchemaCompliance('{"name": "x", "score": 3}', schema)).toMatchObject({ valid: true, value: { name: "x", score: 3 } });
  });

  it("rejects JSON that does not match, naming where", () => {
    expect(jsonSchemaCompliance('{"name": "x", "score": -1}', schema)).toEqual({
      valid: false,
      value: null,
      error: "does not match the JSON Schema at /score: must be >= 0",
    });
    expect(jsonSchemaCompliance('{"name": "x"}', schema).error).toBe("does not match the JSON Schema at the root: must have required property 'score'");
    expect(jsonSchemaCompliance("not json", schema).error).toMatch(/^not valid JSON/);
  });

  it("compiles once and checks many answers, with the schema given as JSON text", () => {
    const check = compileJsonSchemaCheck(JSON.stringify(schema), { allowCodeFence: true });
    expect(check('```json\n{"name": "a", "score": 1}\n```').valid).toBe(true);
    expect(check('{"name": "a", "score": 1.5}').valid).toBe(false);
    expect(check('{"name": "a", "score": 1, "extra": true}').valid).toBe(false);
  });

  it("speaks draft 2020-12", () => {
    const tuple = { type: "array", prefixItems: [{ type: "string" }, { type: "number" }], items: false };
    expect(jsonSchemaCompliance('["a", 1]', tuple).valid).toBe(true);
    expect(jsonSchemaCompliance('["a", 1, 2]', tuple).valid).toBe(false);
  });

  it("does not refuse a schema for annotations or formats it does not know", () => {
    expect(jsonSchemaCompliance('"x"', { type: "string", format: "email", "x-note": 1 }).valid).toBe(true);
  });

  it("refuses a schema that is not JSON or not a valid schema, with a clear error", () => {
    expect(() => compileJsonSchemaCheck("{not json")).toThrow(/^the JSON Schema is not valid JSON: /);
    expect(() => compileJsonSchemaCheck({ type: "strin" })).toThrow(/^the JSON Schema is not a valid draft 2020-12 schema: /);
    expect(() => compileJsonSchemaCheck({ $ref: "https://example.com/s.json" })).toThrow(InvalidFormatCheckError);
    expect(() => compileJsonSchemaCheck([])).toThrow("the JSON Schema must be an object or a boolean");
  });
});

describe("lengthStats", () => {
  it("summarises lengths in characters and whitespace tokens", () => {
    const r = lengthStats(["a bb", "ccc dd e", "", "  f  "]);
    expect(r.count).toBe(4);
    // Characters 4, 8, 0, 5; tokens 2, 3, 0, 1.
    expect(r.characters).toMatchObject({ mean: 4.25, p50: 4.5, min: 0, max: 8 });
    expect(r.characters.p95).toBeCloseTo(7.55, 12);
    expect(r.tokens.mean).toBe(1.5);
    expect(r.tokens.p50).toBe(1.5);
    expect(r.tokens.p95).toBeCloseTo(2.85, 12);
    expect([r.tokens.min, r.tokens.max]).toEqual([0, 3]);
  });

  it("counts characters as code points", () => {
    expect(lengthStats(["😀é"]).characters.max).toBe(2);
  });

  it("refuses no texts", () => {
    expect(() => lengthStats([])).toThrow(RangeError);
  });
});
