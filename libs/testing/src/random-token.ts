import { randomBytes } from "node:crypto";

/** Lowercase hex of `bytes` random bytes; lowercase so it is valid in database, subject and stream names alike. */
export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}
