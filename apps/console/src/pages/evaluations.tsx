import { useState } from "preact/hooks";
import { ApiError, rpc } from "../api";
import { ci, enumName, int, lastPart, metricName, num, time } from "../format";
import { href } from "../router";
import type { EvaluatedModel, EvaluationExample, EvaluationRun, MetricDifference, MetricValue, ServingStats } from "../types";
import { ErrorNote, Stat, StateBadge, Table, useLoad } from "../ui";

/** `tiny, 2-shot from support@s-train`. */
function modelLabel(m: EvaluatedModel | undefined): string {
  if (!m) return "—";
  const name = m.model || m.adapterVersion || "—";
  const shot = m.fewShot?.shots ? `, ${m.fewShot.shots}-shot from ${(m.fewShot.datasetVersion ?? "").replace(/^datasets\//, "").replace("/versions/", "@")}` : "";
  return `${name}${shot}`;
}

export function EvaluationsPage({ id }: { id: string }) {
  const { data, error } = useLoad(() => rpc<{ evaluationRuns?: EvaluationRun[] }>("evaluator", "ListEvaluationRuns", { pageSize: 200 }), []);
  const runs = data?.evaluationRuns ?? [];
  return (
    <section aria-labelledby="evals-title">
      <h1 id="evals-title">Evaluations</h1>
      <ErrorNote error={error} />
      {data && runs.length === 0 ? <p class="muted">No evaluation runs yet: start one with `lathe evals create`.</p> : null}
      {runs.length > 0 ? (
        <Table caption={`${runs.length} runs`} head={["Run", "State", "Candidate", "Baseline", "Eval set", "Examples", "Created"]} id="runs-table">
          {runs.map((r) => (
            <tr key={r.name} class={r.name === id ? "selected" : undefined}>
              <td>
                <a href={href("evaluations", r.name)} aria-current={r.name === id ? "true" : undefined}>
                  {lastPart(r.name)}
                </a>
              </td>
              <td>
                <StateBadge state={r.state} />
              </td>
              <td>{modelLabel(r.candidate)}</td>
              <td>{r.baseline ? modelLabel(r.baseline) : "—"}</td>
              <td>{(r.evalDatasetVersion ?? "").replace(/^datasets\//, "").replace("/versions/", "@")}</td>
              <td class="num">
                {r.completedExampleCount ?? 0}/{r.totalExampleCount ?? 0}
              </td>
              <td>{time(r.createTime)}</td>
            </tr>
          ))}
        </Table>
      ) : null}
      {runs.length > 1 ? <CompareForm runs={runs} /> : null}
      {id ? <RunView name={id} /> : null}
    </section>
  );
}

function MetricsTable({ caption, candidate, baseline }: { caption: string; candidate: MetricValue[]; baseline: MetricValue[] }) {
  return (
    <Table caption={caption} head={["Metric", "Candidate", "CI", ...(baseline.length ? ["Baseline", "CI"] : []), "Examples"]} id="run-metrics">
      {candidate.map((m) => {
        const b = baseline.find((x) => x.metric === m.metric);
        return (
          <tr key={m.metric}>
            <th scope="row">{metricName(m.metric)}</th>
            <td class="num">{num(m.value ?? 0)}</td>
            <td class="num">{ci(m.confidenceInterval)}</td>
            {baseline.length ? (
              <>
                <td class="num">{b ? num(b.value ?? 0) : "—"}</td>
                <td class="num">{b ? ci(b.confidenceInterval) : ""}</td>
              </>
            ) : null}
            <td class="num">{int(m.exampleCount)}</td>
          </tr>
        );
      })}
    </Table>
  );
}

function DifferencesTable({ caption, differences, a, b, id }: { caption: string; differences: MetricDifference[]; a: string; b: string; id?: string }) {
  return (
    <Table caption={caption} head={["Metric", a, b, "Difference", "CI", "Wins/ties/losses", "p"]} {...(id ? { id } : {})}>
      {differences.map((d) => (
        <tr key={d.metric}>
          <th scope="row">{metricName(d.metric)}</th>
          <td class="num">{num(d.candidateValue ?? 0)}</td>
          <td class="num">{num(d.baselineValue ?? 0)}</td>
          <td class="num">{(d.meanDifference ?? 0) >= 0 ? "+" : ""}{num(d.meanDifference ?? 0)}</td>
          <td class="num">{ci(d.confidenceInterval)}</td>
          <td class="num">
            {d.winCount ?? 0}/{d.tieCount ?? 0}/{d.lossCount ?? 0}
          </td>
          <td class="num">{(d.pValue ?? 0) < 0.001 ? "<0.001" : num(d.pValue ?? 0)}</td>
        </tr>
      ))}
    </Table>
  );
}

/**
 * Whether the candidate beats a few-shot prompt of a base model (the baseline, or the other way
 * round): per metric, better when the interval of the difference is above zero, worse when below.
 */
function FewShotVerdict({ run }: { run: EvaluationRun }) {
  const fewShotSide = run.baseline?.fewShot?.shots ? "baseline" : run.candidate?.fewShot?.shots ? "candidate" : undefined;
  if (!fewShotSide || !run.differences?.length) return null;
  const other = fewShotSide === "baseline" ? "candidate" : "baseline";
  const verdicts = run.differences.map((d) => {
    const lo = d.confidenceInterval?.lower ?? 0;
    const hi = d.confidenceInterval?.upper ?? 0;
    // Differences are candidate − baseline.
    const sign = fewShotSide === "baseline" ? 1 : -1;
    const [l, h] = sign === 1 ? [lo, hi] : [-hi, -lo];
    return { metric: metricName(d.metric), verdict: l > 0 ? "better" : h < 0 ? "worse" : "no clear difference" };
  });
  const better = verdicts.filter((v) => v.verdict === "better").length;
  const worse = verdicts.filter((v) => v.verdict === "worse").length;
  const summary =
    better > 0 && worse === 0
      ? `The ${other} beats the few-shot prompt: fine-tuning pays off here.`
      : worse > 0 && better === 0
        ? `The few-shot prompt does as well or better than the ${other}: a prompt may be enough.`
        : `No clear winner over the few-shot prompt on these examples.`;
  return (
    <div class="verdict" data-testid="few-shot-verdict">
      <strong>Few-shot baseline verdict.</strong> {summary}{" "}
      {verdicts.map((v) => `${v.metric}: ${v.verdict}`).join("; ")}.
    </div>
  );
}

function ServingTable({ c, b }: { c: ServingStats | undefined; b: ServingStats | undefined }) {
  if (!c) return null;
  const row = (label: string, f: (s: ServingStats) => string) => (
    <tr>
      <th scope="row">{label}</th>
      <td class="num">{f(c)}</td>
      {b ? <td class="num">{f(b)}</td> : null}
    </tr>
  );
  return (
    <Table caption="Serving" head={["", "Candidate", ...(b ? ["Baseline"] : [])]}>
      {row("Answers", (s) => int(s.answerCount))}
      {row("Tokens in/out", (s) => `${int(s.promptTokens)} / ${int(s.completionTokens)}`)}
      {row("Latency p50/p95", (s) => `${num(s.latencyP50Ms, 0)} / ${num(s.latencyP95Ms, 0)} ms`)}
      {row("Cost per 1,000 answers", (s) => (s.costPer1000Answers === undefined ? "—" : num(s.costPer1000Answers, 4)))}
    </Table>
  );
}

function RunView({ name }: { name: string }) {
  const run = useLoad(() => rpc<{ evaluationRun: EvaluationRun }>("evaluator", "GetEvaluationRun", { name }).then((r) => r.evaluationRun), [name]);
  const preds = useLoad(() => rpc<{ examples?: EvaluationExample[] }>("evaluator", "ListEvaluationPredictions", { parent: name, pageSize: 100 }).then((r) => r.examples ?? []), [name]);
  const r = run.data;
  return (
    <section aria-labelledby="run-title">
      <h2 id="run-title">
        {name} {r ? <StateBadge state={r.state} /> : null}
      </h2>
      <ErrorNote error={run.error} />
      {r ? (
        <>
          <dl class="stats">
            <Stat label="Candidate" value={modelLabel(r.candidate)} />
            <Stat label="Baseline" value={r.baseline ? modelLabel(r.baseline) : "—"} />
            <Stat label="Examples" value={`${r.completedExampleCount ?? 0}/${r.totalExampleCount ?? 0}`} />
            <Stat label="Failed" value={int(r.failedExampleCount)} />
          </dl>
          {r.fineTuningJob ? (
            <p>
              From job <a href={href("jobs", r.fineTuningJob)}>{r.fineTuningJob}</a>
            </p>
          ) : null}
          {r.error?.message ? <p class="error">{r.error.message}</p> : null}
          <MetricsTable caption="Metrics with confidence intervals" candidate={r.candidateResults ?? []} baseline={r.baselineResults ?? []} />
          {(r.differences ?? []).length > 0 ? <DifferencesTable caption="Candidate − baseline, paired by example" differences={r.differences ?? []} a="Candidate" b="Baseline" /> : null}
          <FewShotVerdict run={r} />
          {r.judgeResult ? (
            <p>
              Judge {r.judgeResult.model}: candidate wins {r.judgeResult.winCount ?? 0}, ties {r.judgeResult.tieCount ?? 0}, baseline wins {r.judgeResult.lossCount ?? 0}; win rate {num(r.judgeResult.winRate ?? 0)} {ci(r.judgeResult.confidenceInterval)}
            </p>
          ) : null}
          <ServingTable c={r.candidateServing} b={r.baselineServing} />
        </>
      ) : null}
      <ErrorNote error={preds.error} />
      {(preds.data ?? []).length > 0 ? (
        <Table caption="Predictions beside the references" head={["#", "Prompt", "Reference", "Candidate", ...(r?.baseline ? ["Baseline"] : []), "Scores (candidate / baseline)", ...(preds.data?.some((e) => e.judgeVerdict) ? ["Judge"] : [])]} id="predictions">
          {(preds.data ?? []).map((e) => (
            <tr key={e.index ?? 0}>
              <td class="num">{e.index ?? 0}</td>
              <td class="text">{e.prompt}</td>
              <td class="text">{e.reference}</td>
              <td class="text">{e.candidate?.error ? <span class="error">{e.candidate.error}</span> : e.candidate?.text}</td>
              {r?.baseline ? <td class="text">{e.baseline?.error ? <span class="error">{e.baseline.error}</span> : e.baseline?.text}</td> : null}
              <td class="num">
                {(e.candidate?.scores ?? []).map((s) => {
                  const b = e.baseline?.scores?.find((x) => x.metric === s.metric);
                  return <div key={s.metric}>{`${metricName(s.metric)} ${num(s.value ?? 0)}${b ? ` / ${num(b.value ?? 0)}` : ""}`}</div>;
                })}
              </td>
              {preds.data?.some((x) => x.judgeVerdict) ? <td>{enumName(e.judgeVerdict, "JUDGE_VERDICT_")}</td> : null}
            </tr>
          ))}
        </Table>
      ) : null}
    </section>
  );
}

function CompareForm({ runs }: { runs: EvaluationRun[] }) {
  const done = runs.filter((r) => r.state === "STATE_SUCCEEDED");
  const [a, setA] = useState(done[0]?.name ?? "");
  const [b, setB] = useState(done[1]?.name ?? "");
  const [result, setResult] = useState<{ differences?: MetricDifference[]; pairedExampleCount?: number } | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const compare = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    setResult(undefined);
    if (a === b) {
      setError("Choose two different runs.");
      return;
    }
    try {
      setResult(await rpc("evaluator", "CompareEvaluationRuns", { candidateRun: a, baselineRun: b }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  const label = (n: string) => {
    const r = runs.find((x) => x.name === n);
    return `${lastPart(n)} (${modelLabel(r?.candidate)})`;
  };
  const runPicker = (title: string, name: string, value: string, set: (v: string) => void) => (
    <label>
      {title}
      <select name={name} value={value} onChange={(e) => set((e.target as HTMLSelectElement).value)}>
        {done.map((r) => (
          <option key={r.name} value={r.name}>
            {label(r.name)}
          </option>
        ))}
      </select>
    </label>
  );
  return (
    <section aria-labelledby="compare-title">
      <h2 id="compare-title">Compare two runs</h2>
      <form class="form-row" onSubmit={compare}>
        {runPicker("Run A", "run-a", a, setA)}
        {runPicker("Run B", "run-b", b, setB)}
        <button type="submit">Compare</button>
      </form>
      <ErrorNote error={error} />
      {result ? (
        <>
          <DifferencesTable caption={`A − B, paired over the ${result.pairedExampleCount ?? 0} examples both runs scored`} differences={result.differences ?? []} a="A" b="B" id="comparison" />
        </>
      ) : null}
    </section>
  );
}
