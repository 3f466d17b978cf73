import { describe, expect, it } from "vitest";
import { detectRowFormat, parseTrainingLine, parseTrainingRow, type RowResult } from "./index.js";

const turns = (r: RowResult) => (r.ok ? r.example.messages : r.reason);

describe("parseTrainingRow", () => {
  it("normalizes the three formats to a conversation", () => {
    expect(parseTrainingRow({ system: "Be terse.", instruction: "Translate.", input: "Good morning", output: "Bonjour" })).toEqual({
      ok: true,
      format: "instruction",
      example: {
        messages: [
          { role: "system", content: "Be terse." },
          { role: "user", content: "Translate.\n\nGood morning" },
          { role: "assistant", content: "Bonjour" },
        ],
      },
    });
    // A blank system or input counts as none; prompt/completion rows may have a system message too.
    expect(turns(parseTrainingRow({ instruction: "Say hi.", input: " ", system: "", output: "Hi!" }))).toEqual([
      { role: "user", content: "Say hi." },
      { role: "assistant", content: "Hi!" },
    ]);
    expect(turns(parseTrainingRow({ prompt: "2 + 2 =", completion: "4", system: "Math." }))).toEqual([
      { role: "system", content: "Math." },
      { role: "user", content: "2 + 2 =" },
      { role: "assistant", content: "4" },
    ]);
    const chat = [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }];
    expect(parseTrainingRow({ messages: chat, prompt: "ignored" })).toEqual({ ok: true, format: "chat", example: { messages: chat } });
  });

  it("detects the format by its fields, messages first", () => {
    expect(detectRowFormat({ messages: 1, prompt: 2 })).toBe("chat");
    expect(detectRowFormat({ output: "x" })).toBe("instruction");
    expect(detectRowFormat({ completion: "x" })).toBe("prompt");
    expect(detectRowFormat({ text: "x" })).toBeUndefined();
  });

  it("refuses a row in another format than the file's", () => {
    expect(parseTrainingRow({ prompt: "q", completion: "a" }, { format: "instruction" })).toMatchObject({
      ok: false,
      reason: "in prompt/completion format, but the file is in instruction/output format",
      problem: { kind: "other-format" },
    });
    expect(parseTrainingRow({ prompt: "q", completion: "a" }, { format: "prompt" }).ok).toBe(true);
  });

  it("accepts an empty answer only when asked to", () => {
    const chat = { messages: [{ role: "user", content: "Say nothing." }, { role: "assistant", content: "" }] };
    expect(parseTrainingRow(chat)).toMatchObject({ ok: false, reason: "messages[1] (assistant) is empty", problem: { kind: "empty", field: "messages[1].content" } });
    expect(parseTrainingRow(chat, { allowEmptyAnswer: true }).ok).toBe(true);
    expect(parseTrainingRow({ prompt: "q", completion: "" }, { allowEmptyAnswer: true }).ok).toBe(true);
    // Still present, and still a string.
    expect(parseTrainingRow({ prompt: "q" }, { allowEmptyAnswer: true })).toMatchObject({ ok: false, reason: '"completion" is missing' });
    expect(parseTrainingRow({ messages: [{ role: "user", content: "" }, { role: "assistant", content: "a" }] }, { allowEmptyAnswer: true })).toMatchObject({ ok: false, reason: "messages[0] (user) is empty" });
  });

  it("says what is at fault, and the value found there, for a caller that words it itself", () => {
    expect(parseTrainingRow({ messages: [{ role: "user", content: 3 }] })).toMatchObject({ problem: { kind: "type", field: "messages[0].content", got: 3 } });
    expect(parseTrainingRow({ instruction: "x", output: "y", input: ["z"] })).toMatchObject({ problem: { kind: "type", field: "input", got: ["z"] } });
    expect(parseTrainingRow({ instruction: "x", output: null })).toMatchObject({ reason: '"output" is missing', problem: { kind: "missing", field: "output" } });
    expect(parseTrainingRow({ messages: [{ role: "user", content: "hi" }] })).toMatchObject({ problem: { kind: "no-answer" } });
    expect(parseTrainingRow({ messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }, { role: "user", content: "c" }] })).toMatchObject({
      reason: "the conversation does not end with an assistant message",
      problem: { kind: "order" },
    });
  });

  it("takes only the three roles, not a name every object has", () => {
    for (const role of ["constructor", "__proto__", "toString", "bot", 1, null]) {
      const r = parseTrainingRow({ messages: [{ role, content: "x" }, { role: "assistant", content: "y" }] });
      expect(r).toMatchObject({ ok: false, reason: 'messages[0].role must be "system", "user" or "assistant"', problem: { kind: "role", got: role } });
    }
  });

  it("answers any value with a row or a reason, never a throw", () => {
    for (const value of [undefined, null, 0, "x", [], [{}], {}, { messages: null }, { messages: [null] }, { messages: [[]] }, Object.create(null) as object]) {
      const r = parseTrainingRow(value);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason.length).toBeGreaterThan(0);
    }
  });
});

describe("parseTrainingLine", () => {
  it("checks the bytes before the row", () => {
    expect(parseTrainingLine(Buffer.from([0x7b, 0xff, 0x7d]))).toMatchObject({ ok: false, reason: "not valid UTF-8", problem: { kind: "line" } });
    expect(parseTrainingLine(Buffer.from('{"prompt":"a\u0000","completion":"b"}'))).toMatchObject({ ok: false, reason: "the line contains U+0000 at character 13; remove control characters" });
    expect(parseTrainingLine(Buffer.from('{"prompt":'))).toMatchObject({ ok: false, reason: expect.stringMatching(/^not valid JSON \(.+\)$/) as unknown });
    expect(parseTrainingLine(Buffer.from('{"prompt":"q","completion":"a"}'), { format: "prompt" })).toMatchObject({ ok: true, format: "prompt" });
  });
});
