/** Prints rows as an aligned text table. */
export function printTable(rows: readonly Record<string, string>[], columns: readonly string[], out: NodeJS.WritableStream = process.stdout): void {
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd();
  out.write(`${line(columns.map((c) => c.toUpperCase()))}\n`);
  for (const r of rows) out.write(`${line(columns.map((c) => r[c] ?? ""))}\n`);
}

export function printJson(value: unknown, out: NodeJS.WritableStream = process.stdout): void {
  out.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Seconds as `m:ss`, or `h:mm:ss` from an hour; `?` when not finite. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}
