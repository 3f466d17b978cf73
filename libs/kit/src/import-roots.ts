import { realpath, stat } from "node:fs/promises";
import { isAbsolute, relative, resolve, sep } from "node:path";
import { AppError, invalidArgument } from "./errors.js";

/**
 * Server-side paths a caller may name. Lathe reads a folder on the server's disk only inside the
 * roots an operator configured (`LATHE_IMPORT_ROOTS`); everything else a caller sends as bytes
 * (an upload). A root may not hold the service's own state (the data dir, the artifact store,
 * caches, the trainer's work folders), so no tenant reaches another's files through a path.
 */
export interface ImportRoots {
  /** The configured roots, resolved (links followed). Empty: no server-side paths at all. */
  readonly roots: readonly string[];
}

/**
 * Resolves the roots an operator configured and refuses any that overlaps a protected folder
 * (the data dir and the artifact store): a root inside one, or one inside a root.
 */
export async function openImportRoots(roots: readonly string[], protectedDirs: readonly string[]): Promise<ImportRoots> {
  const resolved: string[] = [];
  const guarded = await Promise.all(protectedDirs.map(async (d) => realpath(d).catch(() => resolve(d))));
  for (const r of roots) {
    if (!isAbsolute(r)) throw new AppError("FAILED_PRECONDITION", "IMPORT_ROOT_INVALID", `LATHE_IMPORT_ROOTS: ${JSON.stringify(r)} must be an absolute path`);
    const real = await realpath(r).catch(() => {
      throw new AppError("FAILED_PRECONDITION", "IMPORT_ROOT_INVALID", `LATHE_IMPORT_ROOTS: ${r} does not exist`);
    });
    for (const g of guarded) {
      if (inside(g, real) || inside(real, g)) throw new AppError("FAILED_PRECONDITION", "IMPORT_ROOT_INVALID", `LATHE_IMPORT_ROOTS: ${r} overlaps the service's own state (${g}); import roots must lie outside the data dir`);
    }
    resolved.push(real);
  }
  return { roots: resolved };
}

/** Whether `p` is `root` or lies under it (both resolved). */
export function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel));
}

/**
 * The real path of a server-side folder a caller named, after following every link, checked to
 * lie inside an import root. The answer for a path outside the roots is the same whether it
 * exists or not, so it tells a caller nothing about the server's disk.
 */
export async function resolveImportPath(roots: ImportRoots, field: string, path: string): Promise<string> {
  const refuse = () =>
    new AppError(
      "PERMISSION_DENIED",
      "PATH_NOT_IMPORTABLE",
      roots.roots.length === 0
        ? `${field}: this server imports no server-side paths; upload the folder instead (the CLI's --path uploads from your machine)`
        : `${field}: only folders inside the server's import roots can be named; upload the folder instead`,
      { field },
    );
  if (path === "" || !isAbsolute(path) || path.includes("\0")) throw path === "" ? invalidArgument(field, "is required") : refuse();
  if (roots.roots.length === 0) throw refuse();
  const lexical = resolve(path);
  if (!roots.roots.some((r) => inside(r, lexical))) {
    // The lexical path may reach a root through a link; only its real path decides.
    const real = await realpath(lexical).catch(() => undefined);
    if (real === undefined || !roots.roots.some((r) => inside(r, real))) throw refuse();
  }
  const real = await realpath(lexical).catch(() => {
    throw new AppError("NOT_FOUND", "PATH_NOT_FOUND", `${field}: ${lexical} does not exist inside the import roots`, { field });
  });
  if (!roots.roots.some((r) => inside(r, real))) throw refuse();
  const s = await stat(real);
  if (!s.isDirectory()) throw invalidArgument(field, `${lexical} is not a folder`);
  return real;
}
