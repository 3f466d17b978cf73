import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { rpc, watch } from "../api";
import { Chart } from "../chart";
import { duration, int, lastPart, num, rate, seconds, stateName, time } from "../format";
import { href } from "../router";
import type { Checkpoint, FineTuningJob, MetricsRow } from "../types";
import { ErrorNote, Stat, StateBadge, Table, useLoad } from "../ui";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const ENDED = new Set(["STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED"]);

export function JobsPage({ id }: { id: string }) {
  return id ? <JobView name={id} /> : <JobList />;
}

function JobList() {
  const [state, setState] = useState("");
  const [text, setText] = useState("");
  const { data, error, reload } = useLoad(() => rpc<{ fineTuningJobs?: FineTuningJob[] }>("trainer", "ListFineTuningJobs", { pageSize: 200 }), []);
  const jobs = (data?.fineTuningJobs ?? []).filter(
    (j) => (state === "" || stateName(j.state) === state) && (text === "" || `${j.name} ${j.displayName ?? ""} ${j.baseModel ?? ""} ${j.trainDatasetVersion ?? ""}`.toLowerCase().includes(text.toLowerCase())),
  );
  return (
    <section aria-labelledby="jobs-title">
      <h1 id="jobs-title">Fine-tuning jobs</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          State
          <select value={state} onChange={(e) => setState((e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Search
          <input type="search" value={text} placeholder="name, model or dataset" onInput={(e) => setText((e.target as HTMLInputElement).value)} />
        </label>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </form>
      <ErrorNote error={error} />
      {data && jobs.length === 0 ? <p class="muted">{data.fineTuningJobs?.length ? "No job matches the filters." : "No fine-tuning jobs yet: start one with `lathe jobs create`."}</p> : null}
      {jobs.length > 0 ? (
        <Table caption={`${jobs.length} job${jobs.length === 1 ? "" : "s"}`} head={["Job", "State", "Base model", "Train set", "Progress", "Created"]} id="jobs-table">
          {jobs.map((j) => (
            <tr key={j.name}>
              <td>
                <a href={href("jobs", j.name)}>{lastPart(j.name)}</a>
              </td>
              <td>
                <StateBadge state={j.state} />
              </td>
              <td>{lastPart(j.baseModel)}</td>
              <td>{j.trainDatasetVersion?.replace(/^datasets\//, "").replace("/versions/", "@") ?? "—"}</td>
              <td class="num">
                {j.progress?.step ?? 0}/{j.progress?.totalSteps ?? j.estimate?.totalSteps ?? "?"}
              </td>
              <td>{time(j.createTime)}</td>
            </tr>
          ))}
        </Table>
      ) : null}
    </section>
  );
}

/** The curves' points, by step: train loss and learning rate at logged steps, eval loss at eval steps. */
interface Curves {
  steps: number[];
  loss: (number | null)[];
  evalLoss: (number | null)[];
  lr: (number | null)[];
}

function curvesOf(rows: MetricsRow[]): Curves {
  const sorted = [...rows].sort((a, b) => (a.step ?? 0) - (b.step ?? 0));
  return {
    steps: sorted.map((r) => r.step ?? 0),
    loss: sorted.map((r) => r.trainLoss ?? null),
    evalLoss: sorted.map((r) => r.evalLoss ?? null),
    lr: sorted.map((r) => r.learningRate ?? null),
  };
}

/** The curves with the point a Watch message brings, when it is a step not yet drawn. */
function withProgress(c: Curves, job: FineTuningJob): Curves {
  const p = job.progress;
  if (!p || !p.step) return c;
  const last = c.steps.length > 0 ? c.steps[c.steps.length - 1]! : 0;
  if (p.step <= last) {
    // The same step again: an eval loss measured since is put on it.
    if (p.step === last && p.evalLoss !== undefined && c.evalLoss[c.evalLoss.length - 1] === null) {
      return { ...c, evalLoss: [...c.evalLoss.slice(0, -1), p.evalLoss] };
    }
    return c;
  }
  const lastEval = [...c.evalLoss].reverse().find((v) => v !== null);
  const newEval = p.evalLoss !== undefined && p.evalLoss !== lastEval ? p.evalLoss : null;
  return { steps: [...c.steps, p.step], loss: [...c.loss, p.loss ?? null], evalLoss: [...c.evalLoss, newEval], lr: [...c.lr, p.learningRate ?? null] };
}

function JobView({ name }: { name: string }) {
  const [job, setJob] = useState<FineTuningJob | undefined>(undefined);
  const [curves, setCurves] = useState<Curves>({ steps: [], loss: [], evalLoss: [], lr: [] });
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [error, setError] = useState<string | undefined>(undefined);
  const [live, setLive] = useState(false);
  const lastCheckpointLoad = useRef(0);

  const loadCheckpoints = () => {
    lastCheckpointLoad.current = Date.now();
    rpc<{ checkpoints?: Checkpoint[] }>("trainer", "ListCheckpoints", { parent: name, pageSize: 100 }).then(
      (r) => setCheckpoints(r.checkpoints ?? []),
      () => undefined,
    );
  };
  const loadCurves = () =>
    rpc<{ rows?: MetricsRow[] }>("trainer", "GetFineTuningJobMetrics", { name }).then(
      (r) => setCurves(curvesOf(r.rows ?? [])),
      () => undefined,
    );

  useEffect(() => {
    const ac = new AbortController();
    setJob(undefined);
    setError(undefined);
    setCurves({ steps: [], loss: [], evalLoss: [], lr: [] });
    (async () => {
      const got = await rpc<{ fineTuningJob: FineTuningJob }>("trainer", "GetFineTuningJob", { name });
      setJob(got.fineTuningJob);
      await loadCurves();
      loadCheckpoints();
      if (ENDED.has(got.fineTuningJob.state ?? "")) return;
      // Follow it: each message is the whole job; its progress adds a point to the curves.
      setLive(true);
      await watch<{ fineTuningJob: FineTuningJob }>(
        "trainer",
        "WatchFineTuningJob",
        { name },
        (m) => {
          setJob(m.fineTuningJob);
          setCurves((c) => withProgress(c, m.fineTuningJob));
          if (Date.now() - lastCheckpointLoad.current > 2000) loadCheckpoints();
        },
        ac.signal,
      );
      setLive(false);
      // Ended: the logged rows are the exact curves (eval steps included).
      await loadCurves();
      loadCheckpoints();
    })().catch((e: unknown) => {
      setLive(false);
      if (!ac.signal.aborted) setError((e as Error).message);
    });
    return () => ac.abort();
  }, [name]);

  const lossSeries = useMemo(
    () => [
      { label: "train loss", color: "#1d4ed8", values: curves.loss },
      { label: "eval loss", color: "#b45309", values: curves.evalLoss, dash: [6, 4] },
    ],
    [curves],
  );
  const lrSeries = useMemo(() => [{ label: "learning rate", color: "#047857", values: curves.lr }], [curves]);

  const cancel = async () => {
    try {
      const r = await rpc<{ fineTuningJob: FineTuningJob }>("trainer", "CancelFineTuningJob", { name, reason: "cancelled from the console" });
      setJob(r.fineTuningJob);
    } catch (e) {
      setError((e as Error).message);
    }
  };

  const p = job?.progress;
  const total = p?.totalSteps ?? job?.estimate?.totalSteps ?? 0;
  const est = job?.estimate?.hardwareEstimates?.find((h) => h.hardware === job?.estimate?.recommendedHardware) ?? job?.estimate?.hardwareEstimates?.[0];
  const r = job?.result;
  return (
    <section aria-labelledby="job-title">
      <p>
        <a href={href("jobs")}>← All jobs</a>
      </p>
      <h1 id="job-title">
        {name} {job ? <StateBadge state={job.state} /> : null}
      </h1>
      <ErrorNote error={error} />
      {job ? (
        <>
          <p class="muted">
            {lastPart(job.baseModel)} on {job.trainDatasetVersion ?? "—"}
            {job.evalDatasetVersion ? `, evaluated on ${job.evalDatasetVersion}` : ""} · created {time(job.createTime)}
            {job.adapterVersion ? (
              <>
                {" "}
                · adapter <a href={href("registry", job.adapterVersion)}>{job.adapterVersion}</a>
              </>
            ) : null}
            {job.evaluationRun ? (
              <>
                {" "}
                · <a href={href("evaluations", job.evaluationRun)}>evaluation</a>
              </>
            ) : null}
          </p>
          <div class="progress-row">
            <progress max={total || 1} value={p?.step ?? 0} aria-label="Steps done" />
            <span class="num" data-testid="job-steps">
              step {p?.step ?? 0} of {total || "?"}
            </span>
            <span class="live" aria-live="polite">
              {live ? "live" : ""}
            </span>
            {job.state === "STATE_RUNNING" || job.state === "STATE_QUEUED" ? (
              <button type="button" onClick={cancel}>
                Cancel job
              </button>
            ) : null}
          </div>
          <dl class="stats">
            <Stat label="Epoch" value={num(p?.epoch, 2)} />
            <Stat label="Loss" value={num(p?.loss, 4)} testId="job-loss" />
            <Stat label="Eval loss" value={num(p?.evalLoss, 4)} />
            <Stat label="Learning rate" value={rate(p?.learningRate)} />
            <Stat label="Tokens/s" value={num(p?.tokensPerSecond, 1)} />
            <Stat label="Tokens done" value={int(p?.processedTokens)} />
            <Stat label="Time left" value={job.state === "STATE_RUNNING" ? duration(seconds(p?.eta)) : "—"} />
            <Stat label="Attempts" value={String(job.attemptCount ?? 0)} />
          </dl>
          {job.error?.message ? (
            <p class="error" role="alert">
              Failed: {job.error.message}
            </p>
          ) : null}
          {job.cancelReason ? <p class="muted">Cancelled: {job.cancelReason}</p> : null}
          <div class="charts">
            <Chart title="Loss by step" xLabel="step" x={curves.steps} series={lossSeries} />
            <Chart title="Learning rate by step" xLabel="step" x={curves.steps} series={lrSeries} yFormat={(v) => v.toExponential(1)} />
          </div>
          <Table caption="Estimate and actual" head={["", "Estimated", "Actual"]}>
            <tr>
              <th scope="row">Steps</th>
              <td class="num">{job.estimate?.totalSteps ?? "—"}</td>
              <td class="num">{p?.step ?? 0}</td>
            </tr>
            <tr>
              <th scope="row">Tokens</th>
              <td class="num">{int(job.estimate?.totalTokens)}</td>
              <td class="num">{int(r?.processedTokens ?? p?.processedTokens)}</td>
            </tr>
            <tr>
              <th scope="row">Tokens/s</th>
              <td class="num">
                {num(r?.estimatedTokensPerSecond ?? est?.tokensPerSecond, 1)}
                {(r?.estimatedTokensPerSecondSource ?? est?.tokensPerSecondSource) ? ` (${r?.estimatedTokensPerSecondSource ?? est?.tokensPerSecondSource})` : ""}
              </td>
              <td class="num">{num(r?.tokensPerSecond ?? p?.tokensPerSecond, 1)}</td>
            </tr>
            <tr>
              <th scope="row">Duration</th>
              <td class="num">{duration(seconds(r?.estimatedDuration ?? est?.duration))}</td>
              <td class="num">{r ? duration(seconds(r.trainingDuration)) : "—"}</td>
            </tr>
          </Table>
          <Table caption={`Checkpoints (${checkpoints.length})`} head={["Checkpoint", "Step", "Epoch", "Loss", "Eval loss", "Size", "Resumable", "Saved"]} id="checkpoints">
            {checkpoints.map((c) => (
              <tr key={c.name}>
                <td>
                  {lastPart(c.name)}
                  {r?.bestCheckpoint === c.name ? " (best)" : ""}
                </td>
                <td class="num">{c.step ?? 0}</td>
                <td class="num">{num(c.epoch, 2)}</td>
                <td class="num">{num(c.loss, 4)}</td>
                <td class="num">{num(c.evalLoss, 4)}</td>
                <td class="num">{c.sizeBytes ? `${(c.sizeBytes / 1024).toFixed(0)} KiB` : "—"}</td>
                <td>{c.resumable ? "yes" : "no"}</td>
                <td>{time(c.createTime)}</td>
              </tr>
            ))}
          </Table>
          <details>
            <summary>Attempt</summary>
            <dl class="stats">
              <Stat label="Attempt" value={String(job.attemptCount ?? 0)} />
              <Stat label="Worker" value={job.worker || "—"} />
              <Stat label="Started" value={time(job.startTime)} />
              <Stat label="Ended" value={time(job.endTime)} />
            </dl>
          </details>
        </>
      ) : error ? null : (
        <p class="muted">Loading…</p>
      )}
    </section>
  );
}
