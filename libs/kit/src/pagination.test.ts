import { describe, expect, it } from "vitest";
import { AppError } from "./errors.js";
import { decodePageToken, encodePageToken, pageSize } from "./pagination.js";

const isKey = (k: unknown): k is { id: string; seq: number } =>
  typeof k === "object" && k !== null && typeof (k as { id?: unknown }).id === "string" && typeof (k as { seq?: unknown }).seq === "number";

function caught(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error("did not throw");
}

describe("pageSize", () => {
  it("is 50 when unset, the request below the limit, and at most 1000", () => {
    expect(pageSize(0)).toBe(50);
    expect(pageSize(1)).toBe(1);
    expect(pageSize(1000)).toBe(1000);
    expect(pageSize(1001)).toBe(1000);
    expect(pageSize(0, { default: 10, max: 20 })).toBe(10);
    expect(pageSize(500, { default: 10, max: 20 })).toBe(20);
  });

  it.each([-1, 1.5, Number.NaN])("rejects %s as INVALID_ARGUMENT on page_size", (n) => {
    const err = caught(() => pageSize(n));
    expect([err.code, err.field]).toEqual(["INVALID_ARGUMENT", "page_size"]);
  });
});

describe("page tokens", () => {
  it("give back the key they were made from, and nothing for an empty token", () => {
    const key = { id: "models/a", seq: 42 };
    expect(decodePageToken(encodePageToken(key), isKey)).toEqual(key);
    expect(decodePageToken("", isKey)).toBeUndefined();
  });

  it.each([
    ["garbage", "not base64 JSON at all!"],
    ["base64 of non-JSON", Buffer.from("hello").toString("base64url")],
    ["a foreign key", encodePageToken({ other: "x" })],
    ["JSON null", Buffer.from("null").toString("base64url")],
  ])("rejects %s as INVALID_ARGUMENT on page_token", (_what, token) => {
    const err = caught(() => decodePageToken(token, isKey));
    expect([err.code, err.reason, err.field]).toEqual(["INVALID_ARGUMENT", "INVALID_FIELD", "page_token"]);
  });
});
