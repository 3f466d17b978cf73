import { useMemo } from "preact/hooks";
import { rpc } from "../api";
import { Chart } from "../chart";
import { bytes, enumName, int, lastPart, num, time } from "../format";
import { href } from "../router";
import type { Dataset, DatasetRow, DatasetVersion, QualityReport } from "../types";
import { ErrorNote, Stat, StateBadge, Table, useLoad } from "../ui";

/** `id`: a dataset (`datasets/x`) or one of its versions (`datasets/x/versions/v1`). */
export function DatasetsPage({ id }: { id: string }) {
  const dataset = id.split("/").slice(0, 2).join("/");
  const { data, error } = useLoad(() => rpc<{ datasets?: Dataset[] }>("dataset", "ListDatasets", { pageSize: 200 }), []);
  return (
    <section aria-labelledby="datasets-title">
      <h1 id="datasets-title">Datasets</h1>
      <ErrorNote error={error} />
      <div class="split">
        <nav aria-label="Datasets">
          {data && (data.datasets ?? []).length === 0 ? <p class="muted">No datasets yet: upload one with `lathe datasets create`.</p> : null}
          <ul class="list">
            {(data?.datasets ?? []).map((d) => (
              <li key={d.name}>
                <a href={href("datasets", d.name)} aria-current={d.name === dataset ? "true" : undefined}>
                  {lastPart(d.name)} <span class="muted">({d.versionCount ?? 0} versions)</span>
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div>{dataset ? <DatasetView name={dataset} version={id.includes("/versions/") ? id : ""} /> : <p class="muted">Choose a dataset.</p>}</div>
      </div>
    </section>
  );
}

function DatasetView({ name, version }: { name: string; version: string }) {
  const { data, error } = useLoad(() => rpc<{ datasetVersions?: DatasetVersion[] }>("dataset", "ListDatasetVersions", { parent: name, pageSize: 200 }), [name]);
  const versions = data?.datasetVersions ?? [];
  const chosen = version || versions[versions.length - 1]?.name || "";
  return (
    <>
      <h2>{name}</h2>
      <ErrorNote error={error} />
      <Table caption="Versions" head={["Version", "State", "Origin", "Rows", "Passing", "Readiness", "Size", "Created"]}>
        {versions.map((v) => (
          <tr key={v.name} class={v.name === chosen ? "selected" : undefined}>
            <td>
              <a href={href("datasets", v.name)} aria-current={v.name === chosen ? "true" : undefined}>
                {lastPart(v.name)}
              </a>
              {v.parentVersion ? <span class="muted"> from {lastPart(v.parentVersion)}</span> : null}
            </td>
            <td>
              <StateBadge state={v.state} />
            </td>
            <td>{enumName(v.origin, "ORIGIN_")}</td>
            <td class="num">{int(v.rowCount)}</td>
            <td class="num">{int(v.passingRowCount)}</td>
            <td>{enumName(v.readiness, "READINESS_")}</td>
            <td class="num">{bytes(v.sizeBytes)}</td>
            <td>{time(v.createTime)}</td>
          </tr>
        ))}
      </Table>
      {chosen ? <QualityView version={chosen} /> : null}
    </>
  );
}

function QualityView({ version }: { version: string }) {
  const report = useLoad(() => rpc<{ qualityReport?: QualityReport }>("dataset", "GetQualityReport", { name: version }), [version]);
  const failing = useLoad(
    () => rpc<{ responses: { rows?: DatasetRow[] }[] }>("dataset", "StreamDatasetRows", { name: version, failingOnly: true, limit: 50 }).then((r) => r.responses.flatMap((x) => x.rows ?? [])),
    [version],
  );
  const all = useLoad(
    () => rpc<{ responses: { rows?: DatasetRow[] }[] }>("dataset", "StreamDatasetRows", { name: version, limit: 5000 }).then((r) => r.responses.flatMap((x) => x.rows ?? [])),
    [version],
  );
  const q = report.data?.qualityReport;
  const histogram = useMemo(() => tokenHistogram((all.data ?? []).map((r) => r.tokenCount ?? 0).filter((n) => n > 0)), [all.data]);
  const series = useMemo(() => [{ label: "rows", color: "#1d4ed8", values: histogram.counts }], [histogram]);
  return (
    <>
      <h2>Quality report of {lastPart(version)}</h2>
      <ErrorNote error={report.error} />
      {q ? (
        <>
          <dl class="stats">
            <Stat label="Lines" value={int(q.lineCount)} />
            <Stat label="Rows" value={int(q.rowCount)} />
            <Stat label="Passing rows" value={int(q.passingRowCount)} />
            <Stat label="Readiness" value={enumName(q.readiness, "READINESS_")} />
            <Stat label="Exact duplicate groups" value={int(q.exactDuplicateClusters?.length)} />
            <Stat label="Near duplicate groups" value={int(q.nearDuplicateClusters?.length)} />
            <Stat label="PII hits" value={int(q.piiHits?.length)} />
          </dl>
          {(q.readinessReasons ?? []).length > 0 ? (
            <Table caption="Why it is (not) ready" head={["Severity", "Check", "Message", "Rows"]}>
              {(q.readinessReasons ?? []).map((r, i) => (
                <tr key={i}>
                  <td>{enumName(r.severity, "SEVERITY_")}</td>
                  <td>{enumName(r.check, "DATA_CHECK_")}</td>
                  <td>{r.message}</td>
                  <td class="num">{int(r.affectedRowCount)}</td>
                </tr>
              ))}
            </Table>
          ) : null}
          <Table caption="Checks" head={["Check", "Severity", "Failed", "Failing lines"]} id="checks">
            {(q.checkResults ?? []).map((c, i) => (
              <tr key={i}>
                <td>{enumName(c.check, "DATA_CHECK_")}</td>
                <td>{c.skipped ? "skipped" : enumName(c.severity, "SEVERITY_")}</td>
                <td class="num">{int(c.failedCount)}</td>
                <td>
                  {(c.failedLines ?? []).join(", ") || "—"}
                  {c.failedLinesTruncated ? " …" : ""}
                </td>
              </tr>
            ))}
          </Table>
          {q.tokenStatistics ? (
            <>
              <h2>Tokens per row ({q.tokenStatistics.tokenizerModel || "tokenizer"})</h2>
              <dl class="stats">
                <Stat label="Min" value={int(q.tokenStatistics.minTokens)} />
                <Stat label="Median" value={num(q.tokenStatistics.medianTokens, 0)} />
                <Stat label="p95" value={num(q.tokenStatistics.p95Tokens, 0)} />
                <Stat label="Max" value={int(q.tokenStatistics.maxTokens)} />
                <Stat label="Total" value={int(q.tokenStatistics.totalTokens)} />
                <Stat label={`Over ${q.tokenStatistics.maxSeqLength ?? "?"}`} value={int(q.tokenStatistics.overMaxSeqLengthCount)} />
              </dl>
              {histogram.edges.length > 0 ? <Chart title="Token histogram (rows by tokens)" xLabel="tokens" x={histogram.edges} series={series} bars /> : null}
            </>
          ) : (
            <p class="muted">No token statistics: the version was checked without a tokenizer model.</p>
          )}
        </>
      ) : null}
      <Table caption={`Failing rows (${failing.data?.length ?? 0}${(failing.data?.length ?? 0) >= 50 ? ", the first 50" : ""})`} head={["Line", "Failed checks", "Row"]} id="failing-rows">
        {(failing.data ?? []).map((r) => (
          <tr key={r.lineNumber}>
            <td class="num">{r.lineNumber}</td>
            <td>{(r.failedChecks ?? []).map((c) => enumName(c, "DATA_CHECK_")).join(", ")}</td>
            <td class="text">{(r.messages ?? []).map((m) => `${m.role}: ${m.content ?? ""}`).join("\n")}</td>
          </tr>
        ))}
      </Table>
      <ErrorNote error={failing.error} />
    </>
  );
}

/** Rows counted in up to 20 equal bins of token counts; `edges` are each bin's lower edge. */
function tokenHistogram(counts: number[]): { edges: number[]; counts: number[] } {
  if (counts.length === 0) return { edges: [], counts: [] };
  const min = Math.min(...counts);
  const max = Math.max(...counts);
  const bins = Math.min(20, Math.max(1, max - min + 1));
  const width = Math.max(1, Math.ceil((max - min + 1) / bins));
  const edges = Array.from({ length: bins }, (_, i) => min + i * width);
  const out = new Array<number>(bins).fill(0);
  for (const c of counts) out[Math.min(bins - 1, Math.floor((c - min) / width))]!++;
  return { edges, counts: out };
}
