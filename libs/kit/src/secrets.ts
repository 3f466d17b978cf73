import { readFile } from "node:fs/promises";
import { AppError } from "./errors.js";

/** A secret reference: `env:NAME` or `file:/absolute/path`, never the secret itself. */
export const secretRefPattern = /^(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:\/[^\0]{1,1023})$/;

/**
 * The secret a reference names: the environment variable of `env:NAME`, or the contents of the
 * file of `file:/path` (a mounted Kubernetes Secret), trimmed; "" for no reference. Read when
 * needed, never stored. FAILED_PRECONDITION `SECRET_MISSING` says which is missing, never a value.
 */
export async function resolveSecret(ref: string, what = "the API key"): Promise<string> {
  if (ref === "") return "";
  if (ref.startsWith("env:")) {
    const value = process.env[ref.slice(4)];
    if (value === undefined || value.trim() === "") throw new AppError("FAILED_PRECONDITION", "SECRET_MISSING", `${what}'s variable ${ref.slice(4)} is not set in this service's environment`);
    return value.trim();
  }
  try {
    return (await readFile(ref.slice(5), "utf8")).trim();
  } catch (err) {
    throw new AppError("FAILED_PRECONDITION", "SECRET_MISSING", `${what}'s file ${ref.slice(5)} cannot be read: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`);
  }
}
