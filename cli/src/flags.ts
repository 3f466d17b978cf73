/**
 * Parsers of flag values shared by the commands. Each throws an Error that names the flag and the
 * value, which `lathe` prints and exits 1 on.
 */

/** A flag value that must be an integer greater than 0. */
export const positiveInt = (flag: string) => (v: string): number => {
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n <= 0) throw new Error(`--${flag} ${v}: expected a positive integer`);
  return n;
};

/** A flag value that must be an integer of at least 0. */
export const nonNegativeInt = (flag: string) => (v: string): number => {
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < 0) throw new Error(`--${flag} ${v}: expected an integer >= 0`);
  return n;
};

/** A flag value that must be a finite number accepted by `ok`; `expected` says which in the error. */
export const number = (flag: string, ok: (n: number) => boolean, expected: string) => (v: string): number => {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || !ok(n)) throw new Error(`--${flag} ${v}: expected ${expected}`);
  return n;
};

/** A comma-separated list; empty items are dropped. */
export const list = (v: string): string[] =>
  v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");

/** A repeatable `--label key=value`, collected into one record. */
export function parseLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new Error(`--label ${value}: expected key=value`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}
