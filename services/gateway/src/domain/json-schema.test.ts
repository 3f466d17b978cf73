import { getLlama, LlamaLogLevel, type Llama, type LlamaGrammar } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ANY_JSON, compileValidator, createJsonGrammar, JsonSchemaUnsupportedError, MAX_OPTIONAL_PROPERTIES, normaliseJsonSchema, responseFormatOf } from "./json-schema.js";

const P = "response_format.json_schema.schema";

/** The error normalising `schema` throws. */
function refusal(schema: unknown): JsonSchemaUnsupportedError {
  try {
    normaliseJsonSchema(schema);
  } catch (err) {
    if (err instanceof JsonSchemaUnsupportedError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(schema)} to be refused`);
}

const person = {
  type: "object",
  properties: {
    name: { type: "string", description: "full name" },
    age: { type: "integer" },
    born: { type: "string", format: "date" },
    role: { type: ["string", "null"], enum: ["admin", "user", null] },
  },
  required: ["name", "age", "born", "role"],
  additionalProperties: false,
};

describe("normaliseJsonSchema maps to what node-llama-cpp enforces", () => {
  test("an OpenAI strict object keeps its properties and drops annotations", () => {
    expect(normaliseJsonSchema({ $schema: "https://json-schema.org/draft/2020-12/schema", title: "Person", ...person })).toEqual({
      type: "object",
      properties: {
        name: { type: "string" },
        age: { type: "integer" },
        born: { type: "string", format: "date" },
        role: { enum: ["admin", "user", null] },
      },
    });
  });

  test("anyOf becomes oneOf, with bare scalar types merged into one type list", () => {
    expect(normaliseJsonSchema({ anyOf: [{ type: "string" }, { type: "null" }], default: null })).toEqual({ type: ["string", "null"] });
    expect(normaliseJsonSchema({ anyOf: [{ type: "array", items: { type: "number" } }, { type: "integer" }, { type: "number" }] })).toEqual({
      oneOf: [{ type: "number" }, { type: "array", items: { type: "number" } }],
    });
  });

  test("a type list becomes one branch per type, each with the keywords that apply to it", () => {
    expect(normaliseJsonSchema({ type: ["string", "null"], maxLength: 5 })).toEqual({ oneOf: [{ type: "null" }, { type: "string", maxLength: 5 }] });
    expect(normaliseJsonSchema({ type: ["object", "null"], properties: { a: { type: "boolean" } }, required: ["a"], additionalProperties: false })).toEqual({
      oneOf: [{ type: "null" }, { type: "object", properties: { a: { type: "boolean" } } }],
    });
  });

  test("$ref into $defs or definitions is inlined, and the same definition may be used twice", () => {
    const schema = {
      type: "object",
      properties: { home: { $ref: "#/$defs/address", description: "where they live" }, work: { $ref: "#/definitions/address" } },
      required: ["home", "work"],
      additionalProperties: false,
      $defs: { address: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false } },
      definitions: { address: { allOf: [{ $ref: "#/$defs/address" }] } },
    };
    const address = { type: "object", properties: { city: { type: "string" } } };
    expect(normaliseJsonSchema(schema)).toEqual({ type: "object", properties: { home: address, work: address } });
  });

  test("nested arrays and objects, tuples and closed tuples", () => {
    expect(
      normaliseJsonSchema({
        type: "array",
        minItems: 1,
        maxItems: 3,
        items: { type: "array", prefixItems: [{ type: "string" }, { type: "number" }], items: false },
      }),
    ).toEqual({ type: "array", minItems: 1, maxItems: 3, items: { type: "array", prefixItems: [{ type: "string" }, { type: "number" }], maxItems: 2 } });
    expect(normaliseJsonSchema({ type: "array", items: {} })).toEqual({ type: "array" });
  });

  test("enum and const: filtered by type, object and array values spelled out as schemas", () => {
    expect(normaliseJsonSchema({ type: "string", enum: ["a", 1, "b", null] })).toEqual({ enum: ["a", "b"] });
    expect(normaliseJsonSchema({ const: "fixed" })).toEqual({ const: "fixed" });
    expect(normaliseJsonSchema({ enum: [1, { x: [true] }] })).toEqual({
      oneOf: [{ const: 1 }, { type: "object", properties: { x: { type: "array", prefixItems: [{ const: true }], minItems: 1, maxItems: 1 } } }],
    });
  });

  test("{} and true are any JSON value; an object without properties is any object", () => {
    expect(normaliseJsonSchema({})).toEqual(ANY_JSON);
    expect(normaliseJsonSchema(true)).toEqual(ANY_JSON);
    expect(normaliseJsonSchema({ type: "object" })).toEqual({ type: "object", additionalProperties: true });
    expect(normaliseJsonSchema({ type: "object", additionalProperties: { type: "integer" }, maxProperties: 4 })).toEqual({
      type: "object",
      additionalProperties: { type: "integer" },
      maxProperties: 4,
    });
  });

  test("optional properties become one variant per subset, since node-llama-cpp emits every listed property", () => {
    expect(normaliseJsonSchema({ type: "object", properties: { a: { type: "string" }, b: { type: "number" } }, required: ["a"], additionalProperties: false })).toEqual({
      oneOf: [
        { type: "object", properties: { a: { type: "string" }, b: { type: "number" } } },
        { type: "object", properties: { a: { type: "string" } } },
      ],
    });
    expect(normaliseJsonSchema({ type: "object", properties: { a: { type: "null" }, b: { type: "null" } }, minProperties: 1, maxProperties: 1 })).toEqual({
      oneOf: [
        { type: "object", properties: { b: { type: "null" } } },
        { type: "object", properties: { a: { type: "null" } } },
      ],
    });
  });

  test("oneOf passes when no value can match two branches", () => {
    const cat = { type: "object", properties: { kind: { const: "cat" }, lives: { type: "integer" } }, required: ["kind", "lives"], additionalProperties: false };
    const dog = { type: "object", properties: { kind: { const: "dog" }, good: { type: "boolean" } }, required: ["kind", "good"], additionalProperties: false };
    expect(normaliseJsonSchema({ oneOf: [cat, dog] })).toEqual({
      oneOf: [
        { type: "object", properties: { kind: { const: "cat" }, lives: { type: "integer" } } },
        { type: "object", properties: { kind: { const: "dog" }, good: { type: "boolean" } } },
      ],
    });
    expect(normaliseJsonSchema({ oneOf: [{ type: "string" }, { type: "integer" }] })).toEqual({ type: ["string", "integer"] });
  });
});

describe("normaliseJsonSchema refuses what the grammar would drop, naming the path", () => {
  test("pattern, minimum and friends", () => {
    const pattern = refusal({ type: "object", properties: { name: { type: "string", pattern: "^[A-Z]" } }, required: ["name"] });
    expect(pattern.path).toBe(`${P}.properties.name.pattern`);
    expect(pattern.message).toBe(`${P}.properties.name.pattern: pattern is not enforced by the grammar; remove it or validate after`);
    const minimum = refusal({ ...person, properties: { ...person.properties, age: { type: "integer", minimum: 0 } } });
    expect(minimum.path).toBe(`${P}.properties.age.minimum`);
    expect(minimum.message).toContain("minimum is not enforced by the grammar");
    for (const [keyword, value] of [
      ["multipleOf", 2],
      ["uniqueItems", true],
      ["not", {}],
      ["if", {}],
      ["patternProperties", {}],
    ] as const)
      expect(refusal({ type: "array", [keyword]: value }).path).toBe(`${P}.${keyword}`);
  });

  test("the error is a 400-style INVALID_ARGUMENT about the schema field", () => {
    const err = refusal({ type: "string", format: "email" });
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.field).toBe(`${P}.format`);
    expect(err.message).toContain('format "email" is not enforced by the grammar');
  });

  test("too many optional properties, and required names that are not properties", () => {
    const props = Object.fromEntries(Array.from({ length: MAX_OPTIONAL_PROPERTIES + 1 }, (_, i) => [`p${i}`, { type: "string" }]));
    const optional = refusal({ type: "object", properties: props, additionalProperties: false });
    expect(optional.path).toBe(`${P}.required`);
    expect(optional.message).toContain(`${MAX_OPTIONAL_PROPERTIES + 1} properties are optional`);
    expect(refusal({ type: "object", properties: { a: { type: "string" } }, required: ["a", "b"] }).path).toBe(`${P}.required[1]`);
  });

  test("a schema with constraints but no type, false, and unknown keywords", () => {
    const untyped = refusal({ type: "object", properties: { x: { properties: { y: { type: "string" } } } }, required: ["x"] });
    expect(untyped.path).toBe(`${P}.properties.x`);
    expect(untyped.message).toContain("no type");
    expect(refusal({ type: "array", items: false, prefixItems: [false] }).path).toBe(`${P}.prefixItems[0]`);
    expect(refusal({ type: "string", nullable: true }).message).toContain("OpenAPI");
    expect(refusal({ type: "string", "x-color": "red" }).path).toBe(`${P}.x-color`);
    expect(refusal({ type: "object", properties: { "first name": { type: "string", pattern: "." } } }).path).toBe(`${P}.properties["first name"].pattern`);
  });

  test("a recursive $ref, and one that points outside the document", () => {
    const tree = {
      type: "object",
      properties: { value: { type: "string" }, children: { type: "array", items: { $ref: "#" } } },
      required: ["value", "children"],
      additionalProperties: false,
    };
    const recursive = refusal(tree);
    expect(recursive.path).toBe(`${P}.properties.children.items.$ref`);
    expect(recursive.message).toContain("recursive");
    const viaDefs = refusal({ $ref: "#/$defs/node", $defs: { node: { type: "array", items: { $ref: "#/$defs/node" } } } });
    expect(viaDefs.path).toBe(`${P}.$defs.node.items.$ref`);
    expect(refusal({ $ref: "https://example.invalid/schema.json" }).path).toBe(`${P}.$ref`);
    expect(refusal({ $ref: "#/$defs/missing" }).message).toContain("does not resolve");
  });

  test("a problem inside a definition names the definition and the $ref that reached it", () => {
    const err = refusal({ type: "object", properties: { a: { $ref: "#/$defs/n" } }, required: ["a"], $defs: { n: { type: "number", maximum: 3 } } });
    expect(err.path).toBe(`${P}.$defs.n.maximum`);
    expect(err.message).toContain(`reached through the $ref at ${P}.properties.a.$ref`);
  });

  test("constraints node-llama-cpp would silently loosen", () => {
    expect(refusal({ type: "object", properties: { a: { type: "string" } }, required: ["a"], additionalProperties: true }).path).toBe(`${P}.additionalProperties`);
    expect(refusal({ type: "object", additionalProperties: true, minProperties: 1 }).path).toBe(`${P}.minProperties`);
    expect(refusal({ type: "string", minLength: 4, maxLength: 2 }).path).toBe(`${P}.maxLength`);
    expect(refusal({ type: "string", format: "date", maxLength: 10 }).path).toBe(`${P}.maxLength`);
    expect(refusal({ type: "array", minItems: 3, maxItems: 2 }).path).toBe(`${P}.maxItems`);
    expect(refusal({ allOf: [{ type: "string" }, { maxLength: 3 }] }).path).toBe(`${P}.allOf`);
    expect(refusal({ type: "string", anyOf: [{ maxLength: 3 }] }).path).toBe(`${P}.type`);
    expect(refusal({ type: "string", enum: ["a"], maxLength: 3 }).path).toBe(`${P}.maxLength`);
    expect(refusal({ type: "string", items: { type: "string" } }).message).toContain("items applies only to arrays");
    expect(refusal({ type: "integer", enum: ["a"] }).message).toContain("admits nothing");
  });

  test("oneOf whose branches overlap, which the grammar cannot keep to exactly one", () => {
    const err = refusal({ oneOf: [{ type: "number" }, { type: "integer" }] });
    expect(err.path).toBe(`${P}.oneOf`);
    expect(err.message).toContain("use anyOf");
    expect(refusal({ oneOf: [{ type: "string", maxLength: 3 }, { type: "string", minLength: 2 }] }).path).toBe(`${P}.oneOf`);
  });
});

describe("compileValidator checks answers against the original schema", () => {
  const validate = compileValidator(person);

  test("a good answer has no violations", () => {
    expect(validate({ name: "Ada", age: 36, born: "1815-12-10", role: null })).toEqual([]);
    expect(validate({ name: "Ada", age: 36, born: "2024-02-29T00:00:00Z".slice(0, 10), role: "admin" })).toEqual([]);
  });

  test("a bad answer names where it is wrong", () => {
    const violations = validate({ name: 7, age: 36, born: "1815-12-10", role: "root", extra: 1 });
    expect(violations.map((v) => v.instancePath).sort()).toEqual(["", "/name", "/role"]);
    expect(violations.find((v) => v.instancePath === "")?.message).toBe('must NOT have additional properties: "extra"');
    expect(validate({ name: "Ada", age: 36, born: "1815-12-10" })).toEqual([{ instancePath: "", message: "must have required property 'role'" }]);
  });

  test("it catches what the grammar lets through: an exponent on an integer, a day the month lacks", () => {
    expect(validate({ name: "Ada", age: 0.5, born: "2023-02-30", role: null }).map((v) => v.instancePath)).toEqual(["/age", "/born"]);
    const times = compileValidator({ type: "array", items: { type: "string", format: "date-time" } });
    expect(times(["2024-05-01T23:59:59.123Z", "2024-05-01T10:00:00+02:00"])).toEqual([]);
    expect(times(["2024-05-01T24:00:00Z"])).toHaveLength(1);
  });

  test("a schema ajv cannot compile is refused with its path", () => {
    let err: unknown;
    try {
      compileValidator({ type: "object", properties: { a: { type: "strng" } } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(JsonSchemaUnsupportedError);
    expect((err as JsonSchemaUnsupportedError).path).toBe(`${P}.properties.a.type`);
  });

  test("one schema cannot disturb another's validator, even by claiming the meta-schema's $id", () => {
    expect(() => compileValidator({ $id: "https://json-schema.org/draft/2020-12/schema", type: "string" })).toThrow(JsonSchemaUnsupportedError);
    expect(compileValidator({ $id: "mine", type: "string" })("s")).toEqual([]);
    expect(compileValidator({ $id: "mine", type: "integer" })("s")).toEqual([{ instancePath: "", message: "must be integer" }]);
    expect(() => compileValidator({ type: "object", properties: { a: { type: "strng" } } })).toThrow(JsonSchemaUnsupportedError);
  });
});

describe("responseFormatOf", () => {
  test("text, json_object and json_schema", () => {
    expect(responseFormatOf(undefined)).toEqual({ kind: "text" });
    expect(responseFormatOf({ type: "text" })).toEqual({ kind: "text" });
    const object = responseFormatOf({ type: "json_object" });
    if (object.kind !== "json_object") throw new Error(object.kind);
    expect(object.validate({ any: ["thing"] })).toEqual([]);
    expect(object.validate([1])).toEqual([{ instancePath: "", message: "must be a JSON object" }]);
    const format = responseFormatOf({ type: "json_schema", json_schema: { name: "person", strict: true, schema: person } });
    if (format.kind !== "json_schema") throw new Error(format.kind);
    expect(format.name).toBe("person");
    expect(format.strict).toBe(true);
    expect(format.validate({ name: "Ada", age: 36, born: "1815-12-10", role: null })).toEqual([]);
  });

  test("a malformed response_format names the field", () => {
    const fieldOf = (rf: unknown): string | undefined => {
      try {
        responseFormatOf(rf);
      } catch (err) {
        if (err instanceof JsonSchemaUnsupportedError) return err.path;
      }
      return undefined;
    };
    expect(fieldOf({ type: "xml" })).toBe("response_format.type");
    expect(fieldOf({ type: "json_schema" })).toBe("response_format.json_schema");
    expect(fieldOf({ type: "json_schema", json_schema: { name: "a b", schema: {} } })).toBe("response_format.json_schema.name");
    expect(fieldOf({ type: "json_schema", json_schema: { name: "p" } })).toBe("response_format.json_schema.schema");
    expect(fieldOf({ type: "json_schema", json_schema: { name: "p", schema: { type: "number", minimum: 1 } } })).toBe("response_format.json_schema.schema.minimum");
  });
});

describe("node-llama-cpp builds the grammar of a normalised schema (no model needed)", () => {
  let llama: Llama;
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  });
  afterAll(async () => {
    await llama?.dispose();
  });

  /** Whether the grammar admits the answer, by node-llama-cpp's own matcher (internal `_testText`). */
  function admits(grammar: LlamaGrammar, text: string): boolean {
    const testText = (grammar as unknown as { _testText?: (text: string) => boolean })._testText;
    if (typeof testText !== "function") throw new Error("LlamaGrammar._testText is gone from node-llama-cpp; check the grammar another way");
    return testText.call(grammar, text);
  }
  // A JSON schema grammar ends the answer with four newlines, its stop trigger.
  const end = "\n\n\n\n";

  test("enum values, optional properties and anyOf reach the GBNF, and answers are held to them", async () => {
    const schema = normaliseJsonSchema({
      type: "object",
      properties: {
        color: { enum: ["red", "green"] },
        size: { anyOf: [{ type: "integer" }, { type: "null" }] },
        note: { type: "string", maxLength: 8 },
      },
      required: ["color", "size"],
      additionalProperties: false,
    });
    const grammar = await createJsonGrammar(llama, schema);
    expect(grammar.grammar).toContain('"\\"red\\""');
    expect(grammar.grammar).toContain('"\\"green\\""');
    expect(grammar.grammar).toContain('"\\"note\\""');
    expect(admits(grammar, `{"color": "red", "size": 3, "note": "hi"}${end}`)).toBe(true);
    expect(admits(grammar, `{"color": "green", "size": null}${end}`)).toBe(true);
    expect(admits(grammar, `{"color": "blue", "size": 3}${end}`)).toBe(false);
    expect(admits(grammar, `{"color": "red"}${end}`)).toBe(false);
    expect(admits(grammar, `{"color": "red", "size": 3, "note": "far too long"}${end}`)).toBe(false);
    expect(admits(grammar, `{"color": "red", "size": 3, "extra": 1}${end}`)).toBe(false);
  });

  test("the integer and date corners pass the grammar, which is why the validator runs after", async () => {
    const original = { type: "object", properties: { n: { type: "integer" }, d: { type: "string", format: "date" } }, required: ["n", "d"], additionalProperties: false };
    const grammar = await createJsonGrammar(llama, normaliseJsonSchema(original));
    const answer = '{"n": 5e-1, "d": "2023-02-30"}';
    expect(admits(grammar, answer + end)).toBe(true);
    expect(compileValidator(original)(JSON.parse(answer)).map((v) => v.instancePath)).toEqual(["/n", "/d"]);
  });

  test("json_object: any object, from the schema grammar or llama.cpp's json.gbnf", async () => {
    const format = responseFormatOf({ type: "json_object" });
    if (format.kind !== "json_object") throw new Error(format.kind);
    const grammar = await createJsonGrammar(llama, format.grammarSchema);
    expect(admits(grammar, `{"a": [1, {"b": null}], "c": "d"}${end}`)).toBe(true);
    expect(admits(grammar, `{}${end}`)).toBe(true);
    expect(admits(grammar, `[1]${end}`)).toBe(false);
    expect(admits(grammar, `"text"${end}`)).toBe(false);
    const json = await llama.getGrammarFor("json");
    expect(admits(json, '{"a": [1, {"b": null}], "c": "d"}')).toBe(true);
    expect(admits(json, "[1]")).toBe(false);
  });

  test("any JSON value ({}) builds and admits every kind of value", async () => {
    const grammar = await createJsonGrammar(llama, normaliseJsonSchema({}));
    for (const value of ['"s"', "-1.5e3", "true", "null", "[1, [2]]", '{"k": {"n": []}}']) expect(admits(grammar, value + end)).toBe(true);
  });
});
