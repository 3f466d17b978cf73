import { readFile, realpath } from "node:fs/promises";
import { posix } from "node:path";
import { AppError, invalidArgument } from "./errors.js";

/** A secret reference: `env:NAME` or `file:/absolute/path`, never the secret itself. */
export const secretRefPattern = /^(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:\/[^\0]{1,1023})$/;

/**
 * The secrets requests may name when LATHE_SECRET_REFS is unset: variables named LATHE_SECRET_…
 * and files under /var/run/secrets/lathe/ (where the Helm chart mounts them).
 */
export const DEFAULT_SECRET_REFS = "env:LATHE_SECRET_*,file:/var/run/secrets/lathe/*";

/**
 * The references the operator lets requests name, from LATHE_SECRET_REFS (comma-separated; a
 * trailing `*` matches any rest). A tenant names a secret in a request (a teacher's, a judge's,
 * an upstream's key) and the service sends its value to a URL the tenant also names: without this
 * list a tenant could have `env:LATHE_PG_URL` or `file:/etc/…` sent to a server of theirs. Read
 * from the environment the secrets themselves come from.
 */
export function allowedSecretRefs(): string[] {
  return (process.env["LATHE_SECRET_REFS"] ?? DEFAULT_SECRET_REFS)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Whether the operator's list allows `ref` (a file path is compared normalised, so `..` cannot leave an allowed folder). */
function allowed(ref: string, patterns: readonly string[]): boolean {
  const target = ref.startsWith("file:") ? `file:${posix.normalize(ref.slice(5))}` : ref;
  return patterns.some((p) => (p.endsWith("*") ? target.startsWith(p.slice(0, -1)) : target === p));
}

const notAllowed = (ref: string, patterns: readonly string[]) =>
  `${ref} is not a secret this platform lets requests name (the operator's LATHE_SECRET_REFS allows ${patterns.length === 0 ? "none" : patterns.join(", ")})`;

/**
 * Checks a secret reference a request gives in `field`: empty (none), or `env:NAME` /
 * `file:/absolute/path` that the operator's LATHE_SECRET_REFS allows.
 * @throws INVALID_ARGUMENT naming the field.
 */
export function checkSecretRef(field: string, ref: string): string {
  if (ref === "") return ref;
  if (!secretRefPattern.test(ref)) throw invalidArgument(field, "must name where the key is, env:NAME or file:/absolute/path, never hold the key itself");
  const patterns = allowedSecretRefs();
  if (!allowed(ref, patterns)) throw invalidArgument(field, notAllowed(ref, patterns));
  return ref;
}

/**
 * The secret a reference names: the environment variable of `env:NAME`, or the contents of the
 * file of `file:/path` (a mounted Kubernetes Secret), trimmed; "" for no reference. Read when
 * needed, never stored. Only what LATHE_SECRET_REFS allows is read (a file after resolving its
 * links too); otherwise FAILED_PRECONDITION `SECRET_NOT_ALLOWED`. FAILED_PRECONDITION
 * `SECRET_MISSING` says which is missing, never a value.
 */
export async function resolveSecret(ref: string, what = "the API key"): Promise<string> {
  if (ref === "") return "";
  const patterns = allowedSecretRefs();
  if (!secretRefPattern.test(ref) || !allowed(ref, patterns)) throw new AppError("FAILED_PRECONDITION", "SECRET_NOT_ALLOWED", `${what}: ${notAllowed(ref, patterns)}`);
  if (ref.startsWith("env:")) {
    const value = process.env[ref.slice(4)];
    if (value === undefined || value.trim() === "") throw new AppError("FAILED_PRECONDITION", "SECRET_MISSING", `${what}'s variable ${ref.slice(4)} is not set in this service's environment`);
    return value.trim();
  }
  const file = ref.slice(5);
  try {
    // A link inside an allowed folder must not lead out of it.
    const real = await realpath(file);
    if (!allowed(`file:${real}`, patterns)) throw new AppError("FAILED_PRECONDITION", "SECRET_NOT_ALLOWED", `${what}: ${file} leads to ${real}, outside what LATHE_SECRET_REFS allows`);
    return (await readFile(real, "utf8")).trim();
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError("FAILED_PRECONDITION", "SECRET_MISSING", `${what}'s file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`);
  }
}
