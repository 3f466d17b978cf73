import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AppError } from "@lathe/kit";
import { FILTER_MAX_LENGTH, FILTER_MAX_TERMS, parseFilter, type FilterTerm } from "./filter.js";

/** Fuzz runs per property: LATHE_FUZZ_RUNS, default 200; a fixed seed so a failure reproduces. */
const runs = Number(process.env["LATHE_FUZZ_RUNS"] ?? 200);
const settings = { numRuns: runs, seed: 20260110 };

/** A result, or INVALID_ARGUMENT on `filter`; anything else (a RangeError, a TypeError) fails. */
function outcome(filter: string): FilterTerm[] | AppError {
  try {
    return parseFilter(filter);
  } catch (err) {
    if (err instanceof AppError && err.code === "INVALID_ARGUMENT" && err.field === "filter") return err;
    throw err;
  }
}

const label = fc.stringMatching(/^[a-z][a-z0-9_-]{0,10}$/);
// eslint-disable-next-line no-control-regex -- the control characters are what this strips
const text = fc.string({ maxLength: 20 }).map((s) => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, ""));
const quoted = (s: string) => `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
const op = fc.constantFrom<"=" | "!=">("=", "!=");
/** A valid comparison and the term it must read as. */
const validTerm: fc.Arbitrary<[string, FilterTerm]> = fc.oneof(
  fc.tuple(op, fc.constantFrom(["STATE_QUEUED", "QUEUED"], ["STATE_RUNNING", "RUNNING"], ["STATE_SUCCEEDED", "SUCCEEDED"], ["STATE_FAILED", "FAILED"], ["STATE_CANCELLED", "CANCELLED"]) as fc.Arbitrary<[string, "QUEUED"]>).map(([o, [name, value]]): [string, FilterTerm] => [`state ${o} ${name}`, { column: "state", op: o, value }]),
  fc.tuple(op, fc.constantFrom(["FINE_TUNING_METHOD_LORA", "lora"], ["FINE_TUNING_METHOD_QLORA", "qlora"]) as fc.Arbitrary<[string, "lora"]>).map(([o, [name, value]]): [string, FilterTerm] => [`method${o}${name}`, { column: "method", op: o, value }]),
  fc.tuple(op, label).map(([o, m]): [string, FilterTerm] => [`base_model ${o} "models/${m}"`, { column: "baseModel", op: o, value: `models/${m}` }]),
  fc.tuple(op, label, label).map(([o, d, v]): [string, FilterTerm] => [`train_dataset_version ${o} "datasets/${d}/versions/${v}"`, { column: "trainDatasetVersion", op: o, value: `datasets/${d}/versions/${v}` }]),
  fc.tuple(op, label, text).map(([o, k, v]): [string, FilterTerm] => [`labels.${k} ${o} ${quoted(v)}`, { column: "labels", label: k, op: o, value: v }]),
);
/** Pieces of the grammar and things that break it, glued at random. */
const token = fc.constantFrom("state", "method", "base_model", "labels.", "labels.team", "train_dataset_version", "=", "!=", "==", " AND ", "AND", " OR ", "NOT ", '"', '\\', "\\\"", " ", "\t", "\n", "(", ")", "STATE_RUNNING", "FINE_TUNING_METHOD_LORA", "models/x", "datasets/d/versions/v", "\u0000", "\u001b", "\u007f", "\u2028", "\ud800", "é", "*", "-1", "1e309", "'", "%", "_");

describe("parseFilter (fuzzed)", () => {
  it("any string reads as terms or is INVALID_ARGUMENT on filter, never another error", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.fullUnicodeString({ maxLength: 200 }), fc.string({ unit: "binary", maxLength: 200 }), fc.array(token, { maxLength: 60 }).map((t) => t.join(""))), (s) => {
        outcome(s);
      }),
      settings,
    );
  });

  it("valid comparisons joined by AND read back as themselves, up to the term limit", () => {
    fc.assert(
      fc.property(fc.array(validTerm, { minLength: 1, maxLength: FILTER_MAX_TERMS + 5 }), fc.constantFrom(" AND ", "  AND\t", "\nAND "), (terms, and) => {
        const filter = terms.map(([t]) => t).join(and);
        const got = outcome(filter);
        if (filter.length > FILTER_MAX_LENGTH || terms.length > FILTER_MAX_TERMS) expect(got).toBeInstanceOf(AppError);
        else expect(got).toEqual(terms.map(([, term]) => term));
      }),
      settings,
    );
  });

  it("valid comparisons with one piece broken or added are a result or INVALID_ARGUMENT", () => {
    fc.assert(
      fc.property(fc.array(validTerm, { minLength: 1, maxLength: 6 }), fc.nat(), token, (terms, at, piece) => {
        const filter = terms.map(([t]) => t).join(" AND ");
        const i = at % (filter.length + 1);
        outcome(filter.slice(0, i) + piece + filter.slice(i));
        outcome(filter.slice(0, i) + filter.slice(i + 1));
      }),
      settings,
    );
  });
});

describe("parseFilter", () => {
  const refused = (filter: string) => {
    const got = outcome(filter);
    expect(got).toBeInstanceOf(AppError);
    return (got as AppError).message;
  };

  it("refuses a filter over the length limit, naming it", () => {
    expect(refused(`labels.a = "${"x".repeat(FILTER_MAX_LENGTH)}"`)).toMatch(/characters long; the limit is 2000/);
  });

  it("refuses more comparisons than the limit without reading them all (20,000 terms)", () => {
    expect(refused(Array.from({ length: 21 }, () => "state = STATE_RUNNING").join(" AND "))).toMatch(/more than 20 comparisons/);
    expect(refused(Array.from({ length: 20_000 }, () => "state=STATE_RUNNING").join(" AND "))).toMatch(/limit is 2000/);
  });

  it("refuses control characters, naming the character and where", () => {
    expect(refused('labels.team = "a\u0000b"')).toMatch(/control character U\+0000 at offset 16/);
    expect(refused('labels.team = "a\tb"')).toMatch(/cannot read/);
    expect(outcome("state = STATE_RUNNING\n\tAND method = FINE_TUNING_METHOD_LORA")).toHaveLength(2);
  });

  it("checks each value against its field's type", () => {
    expect(refused('base_model = "tiny"')).toMatch(/base_model: "tiny" is not a model name/);
    expect(refused('train_dataset_version = "datasets/x"')).toMatch(/is not a dataset version name/);
    expect(refused("state = STATE_UNSPECIFIED")).toMatch(/is not a job state/);
    expect(refused('state = "STATE_RUNNING"')).toMatch(/takes an enum value name/);
    expect(refused('labels.Team = "x"')).toMatch(/is not a label key/);
    expect(refused(`labels.team = "${"x".repeat(64)}"`)).toMatch(/at most 63 characters/);
    expect(refused("labels.team = support")).toMatch(/takes a string in double quotes/);
  });

  it("reads AND inside a quoted value as part of the value", () => {
    expect(outcome('labels.team = "a AND b" AND state != STATE_FAILED')).toEqual([
      { column: "labels", label: "team", op: "=", value: "a AND b" },
      { column: "state", op: "!=", value: "FAILED" },
    ]);
  });
});
