import { invalidArgument } from "./errors.js";

/** Page size of a List request: 50 when unset (0), at most 1000, never negative. */
export function pageSize(requested: number, defaults = { default: 50, max: 1000 }): number {
  if (!Number.isInteger(requested) || requested < 0) throw invalidArgument("page_size", "must be zero or a positive integer");
  if (requested === 0) return defaults.default;
  return Math.min(requested, defaults.max);
}

/**
 * Opaque page tokens: base64url JSON of the last row's sort key, so pages stay stable while rows
 * are added. An altered or foreign token is INVALID_ARGUMENT on `page_token`.
 */
export function encodePageToken(key: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

export function decodePageToken<K extends Record<string, string | number>>(token: string, check: (k: unknown) => k is K): K | undefined {
  if (token === "") return undefined;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (check(parsed)) return parsed;
  } catch {
    /* fall through */
  }
  throw invalidArgument("page_token", "is not a token from a previous page of this list");
}
