import { enumName, lastPart } from "./format";
import type { LineageEdge, LineageNode } from "./types";

const W = 210;
const H = 34;
const GAP_X = 60;
const GAP_Y = 16;

/** A node's label: its display name, else the end of its name (`support/versions/2`), cut to fit. */
function shortName(n: LineageNode): string {
  const label = n.displayName || n.name.split("/").slice(-3).join("/") || lastPart(n.name);
  return label.length > 30 ? `…${label.slice(-29)}` : label;
}

/**
 * Lineage as a layered graph: each node in the column of its longest path from a source (inputs
 * on the left, what was made from them to the right), edges as curves labelled by relation.
 * The node list beside it says the same in text.
 */
export function LineageGraph({ nodes, edges, focus }: { nodes: LineageNode[]; edges: LineageEdge[]; focus: string }) {
  const layer = new Map<string, number>(nodes.map((n) => [n.name, 0]));
  // Longest path layering (the graph is acyclic; a bound keeps a bad answer from looping).
  for (let i = 0; i < nodes.length; i++) {
    let moved = false;
    for (const e of edges) {
      const s = layer.get(e.source);
      const t = layer.get(e.target);
      if (s !== undefined && t !== undefined && t < s + 1) {
        layer.set(e.target, s + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns: LineageNode[][] = [];
  for (const n of nodes) (columns[layer.get(n.name) ?? 0] ??= []).push(n);
  const pos = new Map<string, { x: number; y: number }>();
  columns.forEach((col, c) => col.forEach((n, r) => pos.set(n.name, { x: 10 + c * (W + GAP_X), y: 10 + r * (H + GAP_Y) })));
  const width = 20 + columns.length * (W + GAP_X) - GAP_X;
  const height = 20 + Math.max(1, ...columns.map((c) => c.length)) * (H + GAP_Y) - GAP_Y;
  return (
    <div class="lineage" tabIndex={0}>
      <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`Lineage of ${focus}: ${nodes.length} resources, ${edges.length} links`} data-testid="lineage-graph">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7280" />
          </marker>
        </defs>
        {edges.map((e, i) => {
          const s = pos.get(e.source);
          const t = pos.get(e.target);
          if (!s || !t) return null;
          const x1 = s.x + W;
          const y1 = s.y + H / 2;
          const x2 = t.x;
          const y2 = t.y + H / 2;
          const mid = (x1 + x2) / 2;
          return (
            <g key={i}>
              <path d={`M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`} fill="none" stroke="#6b7280" stroke-width="1.5" marker-end="url(#arrow)" />
              <text x={mid} y={(y1 + y2) / 2 - 3} text-anchor="middle">
                {enumName(e.relation, "LINEAGE_RELATION_")}
              </text>
            </g>
          );
        })}
        {nodes.map((n) => {
          const p = pos.get(n.name)!;
          const isFocus = n.name === focus;
          return (
            <g key={n.name}>
              <title>{n.name}</title>
              <rect x={p.x} y={p.y} width={W} height={H} rx="5" fill={isFocus ? "#dbeafe" : "#ffffff"} stroke={isFocus ? "#1d4ed8" : "#9ca3af"} stroke-width={isFocus ? 2 : 1} />
              <text x={p.x + 6} y={p.y + 13}>
                {enumName(n.kind, "RESOURCE_KIND_").replace(/_/g, " ")}
              </text>
              <text x={p.x + 6} y={p.y + 27} font-weight="600">
                {shortName(n)}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
