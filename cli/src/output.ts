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
