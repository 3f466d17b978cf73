import { readFile } from "node:fs/promises";
import { ModelFormatError } from "./errors.js";

/** Reads a JSON file of a model folder; a missing or malformed file becomes a ModelFormatError naming it. */
export async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const what = code === "ENOENT" ? "file is missing" : `cannot be read (${code ?? String(err)})`;
    throw new ModelFormatError(file, what, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ModelFormatError(file, `invalid JSON${where(text, reason)}: ${reason}`, { cause: err });
  }
}

/** V8 reports a character offset; a person looks for a line and column. */
function where(text: string, reason: string): string {
  const match = /at position (\d+)/.exec(reason);
  if (match?.[1] === undefined) return "";
  const before = text.slice(0, Number(match[1]));
  const line = before.split("\n").length;
  const column = before.length - before.lastIndexOf("\n");
  return ` at line ${line} column ${column}`;
}

/** A plain JSON object, or null for anything else (arrays included). */
export function asObject(value: unknown): Record<string, unknown> | null {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}
