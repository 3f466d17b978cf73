import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { AppError } from "./errors.js";
import { checkPageKey, decodePageToken, encodePageToken, maxPageKeyString, pageSize, paginate, setPageTokenSecret } from "./pagination.js";

const isKey = { id: "string", seq: "int" } as const;
const scope = ["test.things", "acme"] as const;

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
    expect(decodePageToken(scope, encodePageToken(scope, key), isKey)).toEqual(key);
    expect(decodePageToken(scope, "", isKey)).toBeUndefined();
  });

  it.each([
    ["garbage", "not base64 JSON at all!"],
    ["base64 of non-JSON", Buffer.from("hello").toString("base64url")],
    ["a foreign key", encodePageToken(scope, { other: "x" })],
    ["JSON null", Buffer.from("null").toString("base64url")],
  ])("rejects %s as INVALID_ARGUMENT on page_token", (_what, token) => {
    const err = caught(() => decodePageToken(scope, token, isKey));
    expect([err.code, err.reason, err.field]).toEqual(["INVALID_ARGUMENT", "INVALID_FIELD", "page_token"]);
  });
});

describe("page tokens are signed and bound to their list and query", () => {
  afterEach(() => setPageTokenSecret("a-secret-for-the-tests-only"));

  const rejected = (sc: Parameters<typeof decodePageToken>[0], token: string) => {
    const err = caught(() => decodePageToken(sc, token, { seq: "int" }));
    expect([err.code, err.field]).toEqual(["INVALID_ARGUMENT", "page_token"]);
  };
  const unsigned = (json: string) => Buffer.from(json).toString("base64url");

  it.each([
    ["a fraction", '{"seq":1.5}'],
    ["a huge number", '{"seq":1e300}'],
    ["a negative number", '{"seq":-1}'],
    ["a string for a number", '{"seq":"1 or 1=1"}'],
  ])("refuse a forged key with %s, signed or not", (_what, json) => {
    rejected("test.list", unsigned(json));
    rejected("test.list", `${unsigned(json)}.${"A".repeat(43)}`);
    // Signed with the right secret (a bug elsewhere, or an older release): the key check still refuses it.
    expect(checkPageKey({ seq: "int" }, JSON.parse(json))).toBeUndefined();
  });

  it("refuse a token of another list, parent, filter or tenant", () => {
    const token = encodePageToken(["registry.models", "acme"], { seq: 3 });
    expect(decodePageToken(["registry.models", "acme"], token, { seq: "int" })).toEqual({ seq: 3 });
    rejected(["registry.adapters", "acme", "models/a"], token);
    rejected(["registry.models", "globex"], token);
    rejected("registry.models", token);
    const filtered = encodePageToken(["trainer.jobs", "acme", 'state = "RUNNING"'], { seq: 3 });
    rejected(["trainer.jobs", "acme", ""], filtered);
    // Scope parts are kept apart: ["a,b"] is not ["a", "b"].
    rejected(["trainer.jobs", "acme", 'state = "RUNNING"', ""], filtered);
  });

  it("refuse a token signed with another secret, and accept one signed with the shared secret", () => {
    setPageTokenSecret("replica-secret-0123456789");
    const token = encodePageToken("test.list", { seq: 7 });
    setPageTokenSecret("another-secret-0123456789");
    rejected("test.list", token);
    setPageTokenSecret("replica-secret-0123456789");
    expect(decodePageToken("test.list", token, { seq: "int" })).toEqual({ seq: 7 });
  });

  it("refuse a token with any character changed", () => {
    const token = encodePageToken("test.list", { seq: 12345 });
    for (let i = 0; i < token.length; i++) {
      for (const c of ["A", "z", "_", "."]) {
        if (token[i] === c) continue;
        rejected("test.list", token.slice(0, i) + c + token.slice(i + 1));
      }
    }
  });

  it("give back any key they were made from (property)", () => {
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.string({ maxLength: maxPageKeyString }), fc.array(fc.string()), (seq, id, sc) => {
        expect(decodePageToken(sc, encodePageToken(sc, { id, seq }), { id: "string", seq: "int" })).toEqual({ id, seq });
      }),
    );
  });

  it("turn any other string into INVALID_ARGUMENT on page_token, never another error (property)", () => {
    const valid = encodePageToken("test.list", { seq: 1 });
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.base64String(), fc.string().map((s) => `${unsigned(s)}.${valid.split(".")[1]}`)), (token) => {
        fc.pre(token !== "" && token !== valid);
        rejected("test.list", token);
      }),
    );
  });

  it("refuse to make a token of a key they would not accept", () => {
    expect(() => encodePageToken("test.list", { seq: 1.5 })).toThrow(/page key/);
    expect(() => encodePageToken("test.list", { id: "x".repeat(maxPageKeyString + 1) })).toThrow(/page key/);
  });
});

describe("checkPageKey", () => {
  it("accepts exactly the shape's fields with safe non-negative integers and bounded strings (property)", () => {
    const shape = { seq: "int", name: "string" } as const;
    fc.assert(
      fc.property(fc.anything(), (value) => {
        const ok =
          typeof value === "object" && value !== null && !Array.isArray(value) &&
          Object.keys(value).sort().join() === "name,seq" &&
          Number.isSafeInteger((value as { seq: unknown }).seq) && ((value as { seq: number }).seq >= 0) &&
          typeof (value as { name: unknown }).name === "string" && (value as { name: string }).name.length <= maxPageKeyString;
        expect(checkPageKey(shape, value) !== undefined).toBe(ok);
      }),
    );
    expect(checkPageKey(shape, { seq: 0, name: "" })).toEqual({ seq: 0, name: "" });
    expect(checkPageKey(shape, { seq: 0, name: "", extra: 1 })).toBeUndefined();
    expect(checkPageKey(shape, { seq: Number.MAX_SAFE_INTEGER + 1, name: "" })).toBeUndefined();
  });
});

describe("paginate", () => {
  const rows = Array.from({ length: 7 }, (_, i) => ({ seq: String(i + 1), name: `r${i + 1}` }));
  // An in-memory list ordered by seq, as a query would read it.
  const list = (request: { pageSize: number; pageToken: string }, listScope: readonly string[] = ["test.rows", "acme"]) => {
    const asked: { after: number | undefined; limit: number }[] = [];
    const page = paginate({
      scope: listScope,
      request,
      shape: { seq: "int" },
      fetch: async (after, limit) => {
        asked.push({ after: after?.seq, limit });
        return rows.filter((r) => after === undefined || Number(r.seq) > after.seq).slice(0, limit);
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { page, asked };
  };

  it("walks a list page by page, asking for one row more than a page, with no token after the last", async () => {
    const seen: string[] = [];
    let token = "";
    const limits: number[] = [];
    for (let pages = 0; pages < 10; pages++) {
      const { page, asked } = list({ pageSize: 3, pageToken: token });
      const p = await page;
      limits.push(...asked.map((a) => a.limit));
      seen.push(...p.rows.map((r) => r.name));
      token = p.nextPageToken;
      if (token === "") break;
    }
    expect(seen).toEqual(rows.map((r) => r.name));
    expect(limits).toEqual([4, 4, 4]);
  });

  it("gives no token when the rows fill the last page exactly, and reads page_size with its defaults", async () => {
    const { page } = list({ pageSize: 7, pageToken: "" });
    expect(await page).toMatchObject({ nextPageToken: "" });
    const { asked } = list({ pageSize: 0, pageToken: "" });
    expect(asked[0]!.limit).toBe(51);
  });

  it("refuses a token of another scope, and a bad page_size, before fetching", async () => {
    const first = await list({ pageSize: 2, pageToken: "" }).page;
    const other = list({ pageSize: 2, pageToken: first.nextPageToken }, ["test.rows", "other"]);
    await expect(other.page).rejects.toMatchObject({ code: "INVALID_ARGUMENT", metadata: { field: "page_token" } });
    expect(other.asked).toEqual([]);
    await expect(list({ pageSize: -1, pageToken: "" }).page).rejects.toMatchObject({ code: "INVALID_ARGUMENT", metadata: { field: "page_size" } });
  });
});
