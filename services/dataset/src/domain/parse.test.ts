import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DatasetFormat } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { findForbiddenChar } from "@lathe/models";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { LineSplitter, type Line } from "./lines.js";
import { parseLine, type ParseResult } from "./parse.js";

// Fuzzing the JSONL row parser (lines.ts, parse.ts): whatever the bytes, the answer is a row or a
// row error, never a throw, and what comes out can be stored (no NUL, no lone surrogate).
// A fixed seed (LATHE_FUZZ_SEED to try another); LATHE_FUZZ_RUNS sets the runs of each property.
const params = { seed: Number(process.env["LATHE_FUZZ_SEED"] ?? 0x1a7e), numRuns: Number(process.env["LATHE_FUZZ_RUNS"] ?? 200) };
const formats = [DatasetFormat.DATASET_FORMAT_AUTO, DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES, DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT, DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION];
const roles = new Set([ChatRole.CHAT_ROLE_SYSTEM, ChatRole.CHAT_ROLE_USER, ChatRole.CHAT_ROLE_ASSISTANT]);

/** Every result must be one of the two shapes, and storable as jsonb: that is what the service writes. */
function checkResult(r: ParseResult): void {
  if (r.ok) {
    expect(r.row.messages.length).toBeGreaterThan(0);
    expect(r.row.messages.at(-1)!.role).toBe(ChatRole.CHAT_ROLE_ASSISTANT);
    for (const m of r.row.messages) {
      expect(roles.has(m.role)).toBe(true);
      expect(typeof m.content).toBe("string");
      expect(findForbiddenChar(m.content)).toBeUndefined();
    }
  } else {
    expect(typeof r.reason).toBe("string");
    expect(r.reason.length).toBeGreaterThan(0);
    expect(findForbiddenChar(r.reason)).toBeUndefined();
  }
  // JSON.stringify escapes NUL and lone surrogates as \u0000 and \udXXX, which jsonb refuses.
  expect(JSON.stringify(r)).not.toMatch(/\\u0000|\\ud[89a-f][0-9a-f]{2}/i);
}

const parseAll = (bytes: Buffer): void => {
  for (const f of formats) checkResult(parseLine(bytes, f));
};

// Text that stresses the checks: control characters, lone surrogates, astral characters, plain text.
const nasty = fc.oneof(
  fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
  fc.constantFrom("😀", "\u007f", "\u0085", "\ufeff", "\u2028", '"', "\\", "\r\n"),
);
const anyText = fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.fullUnicodeString({ minLength: 1, maxLength: 12 }));
const text = fc.array(fc.oneof({ weight: 4, arbitrary: anyText }, { weight: 1, arbitrary: nasty }), { maxLength: 12 }).map((parts) => parts.join(""));
const cleanText = fc.oneof(fc.string({ minLength: 1, maxLength: 40 }), fc.fullUnicodeString({ minLength: 1, maxLength: 40 })).filter((s) => s.trim() !== "" && findForbiddenChar(s) === undefined);

// Valid rows in the three formats.
const chatRow = fc
  .record({ system: fc.option(cleanText, { nil: undefined }), turns: fc.array(fc.tuple(cleanText, cleanText), { minLength: 1, maxLength: 4 }) })
  .map(({ system, turns }) => ({
    messages: [...(system === undefined ? [] : [{ role: "system", content: system }]), ...turns.flatMap(([u, a]) => [{ role: "user", content: u }, { role: "assistant", content: a }])],
  }));
const instructionRow = fc.record({ instruction: cleanText, output: cleanText, input: fc.option(cleanText, { nil: undefined }), system: fc.option(cleanText, { nil: undefined }) });
const promptRow = fc.record({ prompt: cleanText, completion: cleanText });
const validRow = fc.oneof(chatRow, instructionRow, promptRow);

/** Every string of a row, by its path, so a mutation can pick one. */
function stringPaths(v: unknown, path: (string | number)[] = []): (string | number)[][] {
  if (typeof v === "string") return [path];
  if (Array.isArray(v)) return v.flatMap((x, i) => stringPaths(x, [...path, i]));
  if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => stringPaths(x, [...path, k]));
  return [];
}
function setAt(v: unknown, path: (string | number)[], f: (s: string) => string): unknown {
  if (path.length === 0) return f(v as string);
  const [head, ...rest] = path;
  const copy = (Array.isArray(v) ? [...v] : { ...(v as object) }) as Record<string | number, unknown>;
  copy[head!] = setAt(copy[head!], rest, f);
  return copy;
}

// A mutation of a valid row: a string changed, a key dropped or retyped, the text cut or spliced.
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), pos: fc.nat(), what: nasty }),
  fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), what: text }),
  fc.record({ kind: fc.constant("retype" as const), at: fc.nat(), what: fc.jsonValue({ maxDepth: 3 }) }),
  fc.record({ kind: fc.constant("truncate" as const), pos: fc.nat() }),
  fc.record({ kind: fc.constant("splice" as const), pos: fc.nat(), bytes: fc.uint8Array({ maxLength: 8 }) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(row: object, m: Mutation): Buffer {
  const paths = stringPaths(row);
  const pick = (at: number) => paths[at % paths.length]!;
  // Earlier mutations may have left no string to change.
  if (paths.length === 0 && (m.kind === "insert" || m.kind === "replace" || m.kind === "retype")) return Buffer.from(`${JSON.stringify(row)}"`);
  switch (m.kind) {
    case "insert":
      return Buffer.from(JSON.stringify(setAt(row, pick(m.at), (s) => s.slice(0, m.pos % (s.length + 1)) + m.what + s.slice(m.pos % (s.length + 1)))));
    case "replace":
      return Buffer.from(JSON.stringify(setAt(row, pick(m.at), () => m.what)));
    case "retype": {
      // The string becomes any other JSON value (a number, null, an array, an object…).
      const path = pick(m.at);
      const whole = JSON.parse(JSON.stringify(row)) as Record<string | number, unknown>;
      let target = whole;
      for (const p of path.slice(0, -1)) target = target[p] as Record<string | number, unknown>;
      if (path.length > 0) target[path.at(-1)!] = m.what;
      return Buffer.from(JSON.stringify(whole));
    }
    case "truncate": {
      const b = Buffer.from(JSON.stringify(row));
      return b.subarray(0, m.pos % (b.length + 1));
    }
    case "splice": {
      const b = Buffer.from(JSON.stringify(row));
      const at = m.pos % (b.length + 1);
      return Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
    }
  }
}

describe("the JSONL row parser under fuzzing", () => {
  it("answers random bytes with a row or a row error", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => parseAll(Buffer.from(b))), params);
  });

  it("answers random JSON with a row or a row error", () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => parseAll(Buffer.from(JSON.stringify(v) ?? "null"))), params);
    fc.assert(fc.property(fc.json({ maxDepth: 4 }), (s) => parseAll(Buffer.from(s))), params);
  });

  it("parses every valid row to its conversation, in every format that fits it", () => {
    fc.assert(
      fc.property(validRow, (row) => {
        const r = parseLine(Buffer.from(JSON.stringify(row)), DatasetFormat.DATASET_FORMAT_AUTO);
        checkResult(r);
        expect(r.ok).toBe(true);
        if (r.ok && "messages" in row) expect(r.row.messages.map((m) => m.content)).toEqual(row.messages.map((m) => m.content));
        if (r.ok && "completion" in row) expect(r.row.messages.map((m) => m.content)).toEqual([row.prompt, row.completion]);
      }),
      params,
    );
  });

  it("answers mutated valid rows with a row or a row error", () => {
    fc.assert(fc.property(validRow, fc.array(mutation, { minLength: 1, maxLength: 3 }), (row, ms) => {
      let bytes: Buffer = Buffer.from(JSON.stringify(row));
      for (const m of ms) {
        let value: unknown;
        try {
          value = JSON.parse(bytes.toString("utf8"));
        } catch {
          value = undefined;
        }
        bytes = value && typeof value === "object" ? mutate(value, m) : Buffer.concat([bytes, Buffer.from(JSON.stringify(m.kind))]);
      }
      parseAll(bytes);
    }), params);
  });

  it("refuses a control character or lone surrogate in any turn, naming the field and the character", () => {
    const forbidden = fc.oneof(
      fc.integer({ min: 0, max: 0x1f }).filter((c) => c !== 0x09 && c !== 0x0a && c !== 0x0d),
      fc.integer({ min: 0xd800, max: 0xdfff }),
    );
    fc.assert(
      fc.property(chatRow, fc.nat(), fc.nat(), forbidden, fc.boolean(), (generated, which, pos, code, raw) => {
        // A copy: fast-check reuses generated values while shrinking.
        const row = structuredClone(generated);
        const i = which % row.messages.length;
        const content = row.messages[i]!.content;
        const at = pos % (content.length + 1);
        // Don't split a pair: the inserted unit must stay alone.
        const cut = at > 0 && at < content.length && /[\ud800-\udbff]/.test(content[at - 1]!) ? at + 1 : at;
        const ch = String.fromCharCode(code);
        row.messages[i]!.content = content.slice(0, cut) + ch + content.slice(cut);
        const escaped = JSON.stringify(row);
        // A C0 control may also come raw (unescaped) in the line, which is never valid JSON.
        const line = raw && code < 0x20 ? escaped.replace(JSON.stringify(ch).slice(1, -1), ch) : escaped;
        const r = parseLine(Buffer.from(line), DatasetFormat.DATASET_FORMAT_AUTO);
        checkResult(r);
        expect(r.ok).toBe(false);
        const hex = `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
        const surrogate = code >= 0xd800 ? "a lone surrogate " : "";
        if (r.ok) return;
        if (line !== escaped) expect(r.reason).toMatch(new RegExp(`^the line contains ${hex.replace("+", "\\+")} at character \\d+; remove control characters$`));
        else expect(r.reason).toBe(`messages[${i}].content contains ${surrogate}${hex} at character ${[...content.slice(0, cut)].length + 1}; ${surrogate ? "remove it or fix the text's encoding" : "remove control characters"}`);
      }),
      params,
    );
  });

  it("answers huge nesting and very long lines without throwing", () => {
    const deep = 100_000;
    const cases = [
      "[".repeat(deep),
      "[".repeat(deep) + "]".repeat(deep),
      "{\"a\":".repeat(deep) + "1" + "}".repeat(deep),
      `{"messages":${"[".repeat(deep)}${"]".repeat(deep)}}`,
      `{"messages":[{"role":"user","content":${"[".repeat(deep)}${"]".repeat(deep)}},{"role":"assistant","content":"x"}]}`,
      `{"prompt":"${"p".repeat(1 << 20)}","completion":"${"c".repeat(1 << 20)}"}`,
      `{"prompt":"${"\\u0000".repeat(1 << 16)}","completion":"c"}`,
      `"${"\\ud800".repeat(1 << 16)}"`,
      "x" + "😀".repeat(1 << 16),
    ];
    for (const c of cases) parseAll(Buffer.from(c));
    const long = parseLine(Buffer.from(JSON.stringify({ prompt: "p".repeat(1 << 20), completion: "c" })), DatasetFormat.DATASET_FORMAT_AUTO);
    expect(long.ok).toBe(true);
  });
});

describe("the line splitter under fuzzing", () => {
  /** Lines of a whole buffer, as the splitter promises them. */
  function reference(bytes: Buffer, max: number): { bytes: string | null; length?: number }[] {
    const parts: Buffer[] = [];
    let start = 0;
    for (let nl = bytes.indexOf(0x0a); nl !== -1; nl = bytes.indexOf(0x0a, start)) {
      parts.push(bytes.subarray(start, nl));
      start = nl + 1;
    }
    if (start < bytes.length) parts.push(bytes.subarray(start));
    return parts.map((p) => {
      const line = p.length > 0 && p[p.length - 1] === 0x0d ? p.subarray(0, -1) : p;
      return line.length > max ? { bytes: null } : { bytes: line.toString("hex") };
    });
  }
  const shape = (l: Line) => (l.overLimit ? { bytes: null } : { bytes: l.bytes.toString("hex") });

  it("gives the same lines however the bytes are cut into chunks", () => {
    const byte = fc.oneof(fc.constantFrom(0x0a, 0x0d, 0x7b, 0x00), fc.integer({ min: 0, max: 255 }));
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 400 }), fc.array(fc.nat({ max: 50 }), { maxLength: 30 }), fc.integer({ min: 1, max: 40 }), (arr, cuts, max) => {
        const bytes = Buffer.from(arr);
        const splitter = new LineSplitter(max);
        const got: Line[] = [];
        let at = 0;
        for (const c of cuts) {
          got.push(...splitter.push(bytes.subarray(at, Math.min(bytes.length, at + c))));
          at = Math.min(bytes.length, at + c);
        }
        got.push(...splitter.push(bytes.subarray(at)));
        const last = splitter.end();
        if (last) got.push(last);
        expect(got.map(shape)).toEqual(reference(bytes, max));
        expect(got.map((l) => l.number)).toEqual(got.map((_, i) => i + 1));
      }),
      params,
    );
  });
});
