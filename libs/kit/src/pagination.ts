import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { invalidArgument } from "./errors.js";

/** Page size of a List request: 50 when unset (0), at most 1000, never negative. */
export function pageSize(requested: number, defaults = { default: 50, max: 1000 }): number {
  if (!Number.isInteger(requested) || requested < 0) throw invalidArgument("page_size", "must be zero or a positive integer");
  if (requested === 0) return defaults.default;
  return Math.min(requested, defaults.max);
}

/**
 * What a page token is for: the list and the query that made it, e.g.
 * `["registry.adapters", tenant, parent]` or `["trainer.jobs", tenant, filter]`. A token made for
 * one scope is refused by every other, so a token cannot be replayed against another list, another
 * parent, another filter or another tenant.
 */
export type PageScope = string | readonly (string | number)[];

/** The fields of a list's sort key and their kinds: `{ seq: "int" }`. */
export type PageKeyShape = Readonly<Record<string, "int" | "string">>;

/** The sort key a shape describes: `"int"` fields are numbers, `"string"` fields strings. */
export type PageKey<S extends PageKeyShape> = { -readonly [K in keyof S]: S[K] extends "int" ? number : string };

/** Longest string field of a key, in characters: a sort key is a name or an id, never content. */
export const maxPageKeyString = 512;
// A token is a short key and a MAC; anything much longer is not one of ours.
const maxTokenLength = 4096;

let secret: Buffer = randomBytes(32);

/**
 * Sets the key page tokens are signed with (LATHE_PAGE_TOKEN_SECRET); `undefined` keeps this
 * process's random key. Every process behind one address must use the same secret, or a token
 * from one replica is refused by the next. `startPlatform` calls it.
 */
export function setPageTokenSecret(value: string | undefined): void {
  secret = value === undefined ? secret : Buffer.from(value, "utf8");
}

/**
 * The key if `value` is exactly a key of `shape` (no other fields; ints safe and non-negative,
 * strings at most `maxPageKeyString` characters), else undefined. Page tokens are decoded with it
 * so no list hand-writes these checks.
 */
export function checkPageKey<S extends PageKeyShape>(shape: S, value: unknown): PageKey<S> | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const fields = Object.keys(shape);
  const got = Object.keys(value);
  if (got.length !== fields.length || !got.every((k) => Object.hasOwn(shape, k))) return undefined;
  for (const k of fields) {
    const v = (value as Record<string, unknown>)[k];
    const ok = shape[k] === "int" ? typeof v === "number" && Number.isSafeInteger(v) && v >= 0 : typeof v === "string" && v.length <= maxPageKeyString;
    if (!ok) return undefined;
  }
  return value as PageKey<S>;
}

const canonicalScope = (scope: PageScope): string => JSON.stringify(typeof scope === "string" ? [scope] : scope);

function mac(scope: PageScope, payload: string): Buffer {
  return createHmac("sha256", secret).update("lathe.page_token.v1\0").update(canonicalScope(scope)).update("\0").update(payload).digest();
}

/**
 * An opaque page token for the row after which the next page starts: the sort key, signed with
 * HMAC-SHA256 over the key and `scope`, so pages stay stable while rows are added and a token
 * cannot be forged or used for another list or query. Throws (a bug, not a user error) when the
 * key does not fit its own checks.
 */
export function encodePageToken(scope: PageScope, key: Readonly<Record<string, string | number>>): string {
  const shape = Object.fromEntries(Object.entries(key).map(([k, v]) => [k, typeof v === "number" ? "int" : "string"] as const));
  if (checkPageKey(shape, key) === undefined) throw new Error(`a page key must hold non-negative safe integers and strings of at most ${maxPageKeyString} characters: ${JSON.stringify(key)}`);
  const payload = Buffer.from(JSON.stringify(key)).toString("base64url");
  return `${payload}.${mac(scope, payload).toString("base64url")}`;
}

/**
 * The key a token of this `scope` carries, checked against `shape`; undefined for an empty token
 * (the first page). Any other token (altered, forged, signed with another secret, made for another
 * list or query, or holding a key of another shape) is INVALID_ARGUMENT on `page_token`.
 */
export function decodePageToken<S extends PageKeyShape>(scope: PageScope, token: string, shape: S): PageKey<S> | undefined {
  if (token === "") return undefined;
  const key = token.length <= maxTokenLength ? verify(scope, token, shape) : undefined;
  if (key === undefined) throw invalidArgument("page_token", "is not a token from a previous page of this list and query");
  return key;
}

function verify<S extends PageKeyShape>(scope: PageScope, token: string, shape: S): PageKey<S> | undefined {
  const m = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!m) return undefined;
  const [, payload, sig] = m as unknown as [string, string, string];
  // Compared as text: two spellings of one base64url MAC would make two tokens of one page.
  if (!timingSafeEqual(Buffer.from(sig), Buffer.from(mac(scope, payload).toString("base64url")))) return undefined;
  try {
    return checkPageKey(shape, JSON.parse(Buffer.from(payload, "base64url").toString("utf8")));
  } catch {
    return undefined;
  }
}

/** One page of a keyset-paginated list: its rows and the token of the next page, "" on the last. */
export interface Page<R> {
  rows: R[];
  nextPageToken: string;
}

/**
 * One page of a list ordered by a key (AIP-158 keyset pagination): reads `page_size` (through
 * `pageSize`) and the page token (for `scope`, holding a key of `shape`), asks `fetch` for up to
 * `limit` rows after that key (`undefined` on the first page) in the list's order, and signs the
 * key of the last row shown as the next token when there were more rows than the page holds.
 * The query stays the caller's, so it stays typed:
 *
 * ```ts
 * const { rows, nextPageToken } = await paginate({
 *   scope: ["registry.models", tenant], request: req, shape: { seq: "int" },
 *   fetch: (after, limit) => {
 *     let q = t.selectFrom("models").selectAll().where("tenant", "=", tenant);
 *     if (after) q = q.where("seq", ">", after.seq);
 *     return q.orderBy("seq").limit(limit).execute();
 *   },
 *   keyOf: (r) => ({ seq: Number(r.seq) }),
 * });
 * ```
 */
export async function paginate<S extends PageKeyShape, R>(opts: {
  scope: PageScope;
  request: { readonly pageSize: number; readonly pageToken: string };
  shape: S;
  /** At most `limit` rows after `after` (one more than the page holds, to tell whether more follow). */
  fetch: (after: PageKey<S> | undefined, limit: number) => Promise<readonly R[]>;
  /** The sort key of a row, as the next page's token carries it. */
  keyOf: (row: R) => PageKey<S>;
  sizes?: { default: number; max: number };
}): Promise<Page<R>> {
  const size = pageSize(opts.request.pageSize, opts.sizes);
  const after = decodePageToken(opts.scope, opts.request.pageToken, opts.shape);
  const fetched = await opts.fetch(after, size + 1);
  const rows = fetched.slice(0, size);
  const last = rows[rows.length - 1];
  return { rows, nextPageToken: fetched.length > size && last !== undefined ? encodePageToken(opts.scope, opts.keyOf(last)) : "" };
}
