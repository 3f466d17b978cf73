import { createHash } from "node:crypto";
import { prefixedDigest } from "./digest.js";
import { AppError } from "./errors.js";

/**
 * AIP-155 request ids. A retry with the same `request_id` and the same request returns what the
 * first call made; the same id with a different request is REQUEST_ID_REUSED, naming the first
 * field that differs, so a client never mistakes an old resource for the one it just asked for.
 */

/** JSON with object keys sorted, so equal requests give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (v instanceof Date) return v.toISOString();
  if (v && typeof v === "object") {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** `sha256:<hex>` of a request's canonical JSON. */
export function requestDigest(request: unknown): string {
  return prefixedDigest(createHash("sha256").update(canonicalJson(request)).digest("hex"));
}

/** The path (`a.b[2].c`) of the first place two JSON values differ, or undefined when equal. */
export function firstDifference(a: unknown, b: unknown, path = ""): string | undefined {
  const x = sortKeys(a);
  const y = sortKeys(b);
  if (JSON.stringify(x) === JSON.stringify(y)) return undefined;
  if (Array.isArray(x) && Array.isArray(y)) {
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      const d = firstDifference(x[i], y[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return path || "(request)";
  }
  if (x && y && typeof x === "object" && typeof y === "object" && !Array.isArray(x) && !Array.isArray(y)) {
    const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].sort();
    for (const k of keys) {
      const d = firstDifference((x as Record<string, unknown>)[k], (y as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d !== undefined) return d;
    }
  }
  return path || "(request)";
}

/**
 * Checks a retried request against the one first sent with its `request_id` (both as plain JSON
 * with the API's snake_case field names). Throws REQUEST_ID_REUSED naming the first field that
 * differs; returns quietly when they are the same request.
 */
export function checkSameRequest(requestId: string, earlierName: string, earlier: unknown, now: unknown): void {
  const field = firstDifference(earlier, now);
  if (field === undefined) return;
  throw new AppError(
    "INVALID_ARGUMENT",
    "REQUEST_ID_REUSED",
    `request_id: ${JSON.stringify(requestId)} was first used for a different request (it made ${earlierName}); ${field} differs. Use a new request_id for a new request`,
    { field: "request_id", differing_field: field, name: earlierName },
  );
}
