// How values read on the page: enum names without their prefix, short times and numbers.

/** `STATE_RUNNING` → `running`; `METRIC_ROUGE_L` → `rouge_l`. */
export function enumName(value: string | undefined, prefix: string): string {
  if (!value) return "—";
  return (value.startsWith(prefix) ? value.slice(prefix.length) : value).toLowerCase();
}
export const stateName = (s: string | undefined) => enumName(s, "STATE_");
export const metricName = (m: string | undefined) => enumName(m, "METRIC_");

export function num(v: number | undefined, digits = 3): string {
  return v === undefined || Number.isNaN(v) ? "—" : v.toFixed(digits);
}
export function int(v: number | undefined): string {
  return v === undefined ? "0" : Math.round(v).toLocaleString("en-US");
}
/** A learning rate: small numbers in exponent form. */
export function rate(v: number | undefined): string {
  return v === undefined ? "—" : v.toExponential(2);
}
export function seconds(d: { seconds?: number; nanos?: number } | undefined): number | undefined {
  return d === undefined ? undefined : (d.seconds ?? 0) + (d.nanos ?? 0) / 1e9;
}
export function duration(s: number | undefined): string {
  if (s === undefined) return "—";
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const r = t % 60;
  return h > 0 ? `${h}h ${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m ${String(r).padStart(2, "0")}s` : `${r}s`;
}
export function time(iso: string | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
}
export function bytes(n: number | undefined): string {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
export function ci(c: { lower?: number; upper?: number } | undefined, digits = 3): string {
  return c === undefined ? "" : `[${num(c.lower ?? 0, digits)}, ${num(c.upper ?? 0, digits)}]`;
}
/** `fineTuningJobs/abc` → `abc`. */
export function lastPart(name: string | undefined): string {
  return name ? name.slice(name.lastIndexOf("/") + 1) : "—";
}
