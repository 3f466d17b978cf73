import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  color: string;
  /** One value per x, null where this series has no point (drawn across the gap). */
  values: (number | null)[];
  dash?: number[];
}

interface Props {
  title: string;
  xLabel: string;
  x: number[];
  series: Series[];
  /** Bars instead of lines (a histogram). */
  bars?: boolean;
  height?: number;
  /** The y axis' number format. */
  yFormat?: (v: number) => string;
}

/**
 * A uPlot chart of a fixed height that follows its container's width, updated in place when
 * its data changes (no re-creation, so a streaming curve neither flickers nor moves the page).
 * The number of x values is on `data-points`, and a text summary is its accessible name.
 */
export function Chart({ title, xLabel, x, series, bars = false, height = 220, yFormat }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = series.map((s) => s.label).join("|");

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      axes: [
        { label: xLabel, stroke: "#1f2937", grid: { stroke: "#e5e7eb" } },
        { stroke: "#1f2937", grid: { stroke: "#e5e7eb" }, size: 64, ...(yFormat ? { values: (_u: uPlot, vals: number[]) => vals.map(yFormat) } : {}) },
      ],
      series: [
        { label: xLabel },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          spanGaps: true,
          ...(s.dash ? { dash: s.dash } : {}),
          ...(bars ? { fill: `${s.color}99`, paths: uPlot.paths.bars!({ size: [0.9, 64] }), points: { show: false } } : { points: { show: x.length < 60 } }),
        })),
      ],
    };
    const u = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Re-created only when the series change; data updates go through setData below.
  }, [shape, bars, height, xLabel]);

  useEffect(() => {
    plot.current?.setData([x, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [x, series]);

  const last = series.map((s) => {
    const v = [...s.values].reverse().find((n) => n !== null);
    return `${s.label} ${v === undefined || v === null ? "none yet" : v.toPrecision(4)}`;
  });
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} class="chart-box" style={{ minHeight: `${height + 40}px` }} data-points={x.length} role="img" aria-label={`${title}: ${x.length} points; latest ${last.join(", ")}`} />
    </figure>
  );
}
