import { AppError, badFilter, canonicalJson, checkRequestId, checkSameRequest, enqueueEvents, labelFilterTerm, notFound, paginate, quoteFilterValue, readFilter, resourceName, traceHeaders, watchResource } from "@lathe/kit";
import {
  EvaluationExample,
  EvaluationRun,
  EvaluationRun_State,
  JudgeResult,
  JudgeVerdict,
  ReferenceLikelihood,
  ServingStats,
  type CompareEvaluationRunsRequest,
  type CreateEvaluationRunRequest,
} from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { MetricDifference, MetricValue } from "@lathe/proto/lathe/type/v1/metric";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { sql, type Kysely, type Selectable, type Transaction } from "kysely";
import type { EvaluatorTables, MetricName, RunState, RunsTable } from "../db/migrations.js";
import { evaluationFailed } from "../events.js";
import { differencesOf } from "./aggregate.js";
import { checkRunId, metrics, parseRunName, runSpecOf } from "./spec.js";

export const schema = "evaluator";
const source = "evaluator";

export type RunRow = Selectable<RunsTable>;

const states: Record<RunState, EvaluationRun_State> = {
  QUEUED: EvaluationRun_State.STATE_QUEUED,
  RUNNING: EvaluationRun_State.STATE_RUNNING,
  SUCCEEDED: EvaluationRun_State.STATE_SUCCEEDED,
  FAILED: EvaluationRun_State.STATE_FAILED,
  CANCELLED: EvaluationRun_State.STATE_CANCELLED,
};
export const terminal = (s: RunState) => s === "SUCCEEDED" || s === "FAILED" || s === "CANCELLED";

/** The counts of a run's stored answers: examples with both answers (or the candidate's, without a baseline) and those that failed. */
export interface Progress {
  completed: number;
  failed: number;
  scores: number;
}

/** A stored run as the API shows it. */
export function toRun(r: RunRow, p: Progress): EvaluationRun {
  const s = r.spec;
  const res = r.results;
  const side = (m: typeof s.candidate) => ({ model: m.model, adapterVersion: m.adapterVersion, ...(m.fewShot ? { fewShot: { datasetVersion: m.fewShot.datasetVersion, shots: m.fewShot.shots, seed: m.fewShot.seed } } : {}) });
  return EvaluationRun.fromPartial({
    name: resourceName("evaluationRuns", r.run_id),
    displayName: s.displayName,
    labels: s.labels,
    createTime: r.create_time,
    updateTime: r.update_time,
    startTime: r.start_time ?? undefined,
    endTime: r.end_time ?? undefined,
    state: states[r.state],
    candidate: side(s.candidate),
    baseline: s.baseline ? side(s.baseline) : undefined,
    evalDatasetVersion: s.evalDatasetVersion,
    metrics: s.metrics.map((m) => metrics.value(m)!),
    formatCheck: s.formatCheck ? { kind: { regex: 1, json: 2, json_schema: 3 }[s.formatCheck.kind], pattern: s.formatCheck.pattern, jsonSchema: s.formatCheck.jsonSchema } : undefined,
    generationParams: { temperature: s.generation.temperature, topP: s.generation.topP, maxTokens: s.generation.maxTokens, seed: s.generation.seed, stop: s.generation.stop },
    maxExamples: s.maxExamples,
    bertscoreModel: s.bertscoreModel,
    bootstrapSamples: s.bootstrapSamples,
    confidenceLevel: s.confidenceLevel,
    seed: s.seed,
    fineTuningJob: r.fine_tuning_job,
    totalExampleCount: r.total,
    completedExampleCount: p.completed,
    failedExampleCount: p.failed,
    exampleScoreCount: p.scores,
    candidateResults: (res?.candidateResults ?? []).map((v) => MetricValue.fromJSON(v)),
    baselineResults: (res?.baselineResults ?? []).map((v) => MetricValue.fromJSON(v)),
    differences: (res?.differences ?? []).map((v) => MetricDifference.fromJSON(v)),
    candidateServing: res?.candidateServing ? ServingStats.fromJSON(res.candidateServing) : undefined,
    baselineServing: res?.baselineServing ? ServingStats.fromJSON(res.baselineServing) : undefined,
    bertscoreModelDigest: res?.bertscoreModelDigest ?? "",
    bertscoreLayer: res?.bertscoreLayer ?? 0,
    judge: s.judge ? { model: s.judge.model, baseUrl: s.judge.baseUrl, apiKeySecret: s.judge.apiKeySecret, criteria: s.judge.criteria } : undefined,
    judgeResult: res?.judgeResult ? JudgeResult.fromJSON(res.judgeResult) : undefined,
    candidateLikelihood: res?.candidateLikelihood ? ReferenceLikelihood.fromJSON(res.candidateLikelihood) : undefined,
    baselineLikelihood: res?.baselineLikelihood ? ReferenceLikelihood.fromJSON(res.baselineLikelihood) : undefined,
    error: r.error ?? undefined,
  });
}

type Column = "state" | "candidate_model" | "candidate_adapter_version" | "eval_dataset_version" | "fine_tuning_job";
type Term = { op: "=" | "!="; column: Column; value: string } | { op: "=" | "!="; column: "labels"; label: string; value: string };
const STRING_FIELDS: Record<string, Column> = {
  "candidate.model": "candidate_model",
  "candidate.adapter_version": "candidate_adapter_version",
  eval_dataset_version: "eval_dataset_version",
  fine_tuning_job: "fine_tuning_job",
};
const STATE_NAMES = Object.fromEntries(Object.entries(states).map(([k, v]) => [EvaluationRun_State[v], k]));

function parseRunFilter(filter: string): Term[] {
  return readFilter(filter).map((t): Term => {
    if (t.field === "state") {
      const value = t.bare === undefined ? undefined : STATE_NAMES[t.bare];
      if (value === undefined) throw badFilter(`state takes an enum value name: ${Object.keys(STATE_NAMES).join(", ")}`);
      return { op: t.op, column: "state", value };
    }
    const column = STRING_FIELDS[t.field];
    if (column !== undefined) {
      if (t.quoted === undefined) throw badFilter(`${t.field} takes a string in double quotes`);
      return { op: t.op, column, value: t.quoted };
    }
    if (t.field.startsWith("labels.")) return { op: t.op, column: "labels", ...labelFilterTerm(t) };
    throw badFilter(`cannot filter on ${quoteFilterValue(t.field)}; use state, ${Object.keys(STRING_FIELDS).join(", ")} or labels.<key>`);
  });
}

/** A JSON value with its object keys in snake_case, as the API's fields are named in errors. */
function snakeKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(snakeKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeKeys(x)]));
  return v;
}

/**
 * Evaluation runs: created queued (with the request_id rules of AIP-155), listed, cancelled, their
 * stored answers listed and compared. Their work is the worker's (worker.ts).
 */
export class RunStore {
  constructor(
    private readonly db: Kysely<EvaluatorTables>,
    private readonly onChange: (key: string) => void,
    /** The BERTScore encoder of runs that name none (LATHE_EVALUATOR_BERTSCORE_MODEL). */
    private readonly defaultBertscoreModel: string | undefined = undefined,
  ) {}

  /** Emits `"changed"` with a run's key, `tenant/run_id`, when this process changes it (for Watch). */
  readonly changes = new EventEmitter();

  private get t() {
    return this.db.withSchema(schema);
  }

  async row(tenant: string, field: string, name: string, trx?: Transaction<EvaluatorTables>): Promise<RunRow> {
    const id = parseRunName(field, name);
    let q = (trx ?? this.db).withSchema(schema).selectFrom("runs").selectAll().where("tenant", "=", tenant).where("run_id", "=", id);
    if (trx) q = q.forUpdate();
    const r = await q.executeTakeFirst();
    if (!r) throw notFound("evaluation_run", name);
    return r;
  }

  async progress(tenant: string, r: Pick<RunRow, "run_id" | "spec">): Promise<Progress> {
    const rows = await this.t
      .selectFrom("predictions")
      .select(["idx", "side", "error", sql<number>`(select count(*) from jsonb_object_keys(scores))`.as("n")])
      .where("tenant", "=", tenant)
      .where("run_id", "=", r.run_id)
      .execute();
    const sides = r.spec.baseline ? 2 : 1;
    const per = new Map<number, { done: number; failed: boolean }>();
    let scores = 0;
    for (const p of rows) {
      const e = per.get(p.idx) ?? { done: 0, failed: false };
      e.done++;
      if (p.error !== null) e.failed = true;
      per.set(p.idx, e);
      scores += Number(p.n);
    }
    let completed = 0;
    let failed = 0;
    for (const e of per.values()) {
      if (e.done < sides) continue;
      if (e.failed) failed++;
      else completed++;
    }
    return { completed, failed, scores };
  }

  /** A run now, then each time it changes, until it ends or `signal` aborts. */
  watch(tenant: string, name: string, signal: AbortSignal, pollMs: number): AsyncGenerator<EvaluationRun> {
    const key = `${tenant}/${parseRunName("name", name)}`;
    return watchResource({
      get: () => this.get(tenant, name),
      key,
      changes: this.changes,
      stamp: (r) => `${r.state}|${r.updateTime?.getTime()}|${r.completedExampleCount}|${r.failedExampleCount}|${r.totalExampleCount}`,
      done: (r) => r.state === EvaluationRun_State.STATE_SUCCEEDED || r.state === EvaluationRun_State.STATE_FAILED || r.state === EvaluationRun_State.STATE_CANCELLED,
      signal,
      pollMs,
    });
  }

  async get(tenant: string, name: string): Promise<EvaluationRun> {
    const r = await this.row(tenant, "name", name);
    return toRun(r, await this.progress(tenant, r));
  }

  /** Creates a queued run; `fineTuningJob` for one a job's follow-up asked for. */
  async create(tenant: string, req: CreateEvaluationRunRequest, fineTuningJob = "", followUp?: FollowUp): Promise<EvaluationRun> {
    const spec = runSpecOf(req.evaluationRun);
    if (spec.metrics.includes("bertscore") && spec.bertscoreModel === "" && !this.defaultBertscoreModel) {
      throw new AppError("FAILED_PRECONDITION", "BERTSCORE_MODEL_MISSING", "evaluation_run.bertscore_model: BERTScore needs an encoder model, and this evaluator has none configured (LATHE_EVALUATOR_BERTSCORE_MODEL); name one", { field: "evaluation_run.bertscore_model" });
    }
    const requestId = checkRequestId("request_id", req.requestId);
    const id = req.evaluationRunId === "" ? `run-${randomBytes(6).toString("hex")}` : checkRunId("evaluation_run_id", req.evaluationRunId);
    // What the request_id is bound to: the request as sent, with the API's snake_case field names.
    const body = snakeKeys({ evaluationRunId: req.evaluationRunId, evaluationRun: EvaluationRun.toJSON(EvaluationRun.fromPartial({ ...req.evaluationRun, name: "", createTime: undefined, updateTime: undefined })) });
    const replay = async () => {
      if (requestId === null) return undefined;
      const earlier = await this.t.selectFrom("runs").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
      if (!earlier) return undefined;
      checkSameRequest(requestId, resourceName("evaluationRuns", earlier.run_id), earlier.request_body ?? {}, body);
      return toRun(earlier, await this.progress(tenant, earlier));
    };
    const replayed = await replay();
    if (replayed) return replayed;
    const inserted = await this.t
      .insertInto("runs")
      .values({
        tenant,
        run_id: id,
        display_name: spec.displayName,
        description: "",
        labels: JSON.stringify(spec.labels),
        request_id: requestId,
        request_body: requestId === null ? null : canonicalJson(body),
        spec: JSON.stringify(spec),
        state: "QUEUED",
        fine_tuning_job: fineTuningJob,
        follow_up: followUp ? JSON.stringify(FollowUp.toJSON(followUp)) : null,
        trace: JSON.stringify(traceHeaders()),
      })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
    if (!inserted) {
      const again = await replay();
      if (again) return again;
      throw new AppError("ALREADY_EXISTS", "EVALUATION_RUN_ALREADY_EXISTS", `evaluationRuns/${id} already exists`, { name: resourceName("evaluationRuns", id) });
    }
    this.onChange(`${tenant}/${id}`);
    return toRun(inserted, { completed: 0, failed: 0, scores: 0 });
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string; filter: string }): Promise<{ evaluationRuns: EvaluationRun[]; nextPageToken: string }> {
    const terms = parseRunFilter(req.filter);
    const { rows, nextPageToken } = await paginate({
      scope: ["evaluator.runs", tenant, req.filter],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("runs").selectAll().where("tenant", "=", tenant);
        for (const term of terms) {
          const value =
            term.column === "labels"
              ? sql<string>`(spec -> 'labels') ->> ${term.label}`
              : {
                  candidate_model: sql<string>`spec #>> '{candidate,model}'`,
                  candidate_adapter_version: sql<string>`spec #>> '{candidate,adapterVersion}'`,
                  eval_dataset_version: sql<string>`spec ->> 'evalDatasetVersion'`,
                  fine_tuning_job: sql<string>`fine_tuning_job`,
                  state: sql<string>`state`,
                }[term.column];
          q = term.op === "=" ? q.where(value, "=", term.value) : q.where((eb) => eb.or([eb(value, "is", null), eb(value, "!=", term.value)]));
        }
        if (after) q = q.where("seq", "<", after.seq);
        return q.orderBy("seq", "desc").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { evaluationRuns: await Promise.all(rows.map(async (r) => toRun(r, await this.progress(tenant, r)))), nextPageToken };
  }

  /** Cancels a queued or running run (a running one stops at its next example); a finished run is FAILED_PRECONDITION. */
  async cancel(tenant: string, name: string): Promise<EvaluationRun> {
    await this.db.transaction().execute(async (trx) => {
      const r = await this.row(tenant, "name", name, trx);
      if (terminal(r.state)) throw new AppError("FAILED_PRECONDITION", "EVALUATION_RUN_FINISHED", `${name} already ended (${r.state.toLowerCase()})`, { name });
      await trx
        .withSchema(schema)
        .updateTable("runs")
        .set({ state: "CANCELLED", cancel_requested: true, end_time: sql`now()`, update_time: sql`now()`, lease_owner: null, lease_until: null })
        .where("tenant", "=", tenant)
        .where("run_id", "=", r.run_id)
        .execute();
      await enqueueEvents(trx, schema, source, [
        { def: evaluationFailed, tenant, subject: name, payload: { evaluationRun: name, candidateAdapterVersion: r.spec.candidate.adapterVersion, fineTuningJob: r.fine_tuning_job, error: { code: "CANCELLED", reason: "EVALUATION_RUN_CANCELLED", message: "cancelled", metadata: {} } } },
      ]);
    });
    this.onChange(`${tenant}/${parseRunName("name", name)}`);
    return this.get(tenant, name);
  }

  /** A run's examples with both answers and their scores, in the eval set's order. */
  async predictions(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ examples: EvaluationExample[]; nextPageToken: string }> {
    const r = await this.row(tenant, "parent", req.parent);
    const { rows, nextPageToken } = await paginate({
      scope: ["evaluator.predictions", tenant, r.run_id],
      request: req,
      shape: { idx: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("examples").selectAll().where("tenant", "=", tenant).where("run_id", "=", r.run_id);
        if (after) q = q.where("idx", ">", after.idx);
        return q.orderBy("idx").limit(limit).execute();
      },
      keyOf: (e) => ({ idx: e.idx }),
    });
    const preds = rows.length === 0 ? [] : await this.t.selectFrom("predictions").selectAll().where("tenant", "=", tenant).where("run_id", "=", r.run_id).where("idx", "in", rows.map((e) => e.idx)).execute();
    const byKey = new Map(preds.map((p) => [`${p.side}/${p.idx}`, p]));
    const prediction = (side: string, idx: number) => {
      const p = byKey.get(`${side}/${idx}`);
      if (!p) return undefined;
      return {
        text: p.text,
        finishReason: p.finish_reason,
        scores: Object.entries(p.scores).map(([m, v]) => ({ metric: metrics.value(m as MetricName)!, value: v, exampleCount: 1 })),
        promptTokens: p.prompt_tokens,
        completionTokens: p.completion_tokens,
        latencyMs: p.latency_ms,
        error: p.error ?? "",
        ...(p.reference_loss === null ? {} : { referenceLoss: p.reference_loss, referenceTokenCount: p.reference_tokens ?? 0 }),
      };
    };
    const judged = rows.length === 0 || !r.spec.judge ? [] : await this.t.selectFrom("judgments").selectAll().where("tenant", "=", tenant).where("run_id", "=", r.run_id).where("idx", "in", rows.map((e) => e.idx)).execute();
    const judgment = new Map(judged.map((j) => [j.idx, j]));
    const verdicts = { candidate: JudgeVerdict.JUDGE_VERDICT_CANDIDATE, baseline: JudgeVerdict.JUDGE_VERDICT_BASELINE, tie: JudgeVerdict.JUDGE_VERDICT_TIE };
    const promptOf = (turns: { role: string; content: string }[]) => turns.map((t) => `${t.role}: ${t.content}`).join("\n");
    return {
      examples: rows.map((e) => {
        const j = judgment.get(e.idx);
        return EvaluationExample.fromPartial({ index: e.idx, prompt: promptOf(e.prompt.candidate), reference: e.reference, candidate: prediction("candidate", e.idx), baseline: prediction("baseline", e.idx), ...(j ? { judgeVerdict: verdicts[j.verdict], judgeReplies: [j.first, j.second] } : {}) });
      }),
      nextPageToken,
    };
  }

  /**
   * The paired comparison of two succeeded runs on the same eval dataset version: each run's
   * candidate answers, example by example (the second run's candidate is the baseline).
   */
  async compare(tenant: string, req: CompareEvaluationRunsRequest): Promise<{ differences: MetricDifference[]; pairedExampleCount: number }> {
    const a = await this.row(tenant, "candidate_run", req.candidateRun);
    const b = await this.row(tenant, "baseline_run", req.baselineRun);
    for (const [field, r] of [["candidate_run", a], ["baseline_run", b]] as const) {
      if (r.state !== "SUCCEEDED") throw new AppError("FAILED_PRECONDITION", "EVALUATION_RUN_NOT_SUCCEEDED", `${field}: ${resourceName("evaluationRuns", r.run_id)} has not succeeded (${r.state.toLowerCase()})`, { field });
    }
    if (a.spec.evalDatasetVersion !== b.spec.evalDatasetVersion) {
      throw new AppError("INVALID_ARGUMENT", "DIFFERENT_EVAL_SETS", `baseline_run: the runs evaluated different examples (${a.spec.evalDatasetVersion} and ${b.spec.evalDatasetVersion}), so they cannot be paired`, { field: "baseline_run" });
    }
    const wanted = req.metrics.length === 0 ? a.spec.metrics.filter((m) => b.spec.metrics.includes(m)) : req.metrics.map((m, i) => {
      const n = metrics.name(m);
      if (n === undefined || !a.spec.metrics.includes(n) || !b.spec.metrics.includes(n)) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", `metrics[${i}]: both runs must have computed it`, { field: `metrics[${i}]` });
      return n;
    });
    if (wanted.length === 0) throw new AppError("INVALID_ARGUMENT", "NO_COMMON_METRIC", `metrics: the runs computed no metric in common (${a.spec.metrics.join(", ")} and ${b.spec.metrics.join(", ")})`, { field: "metrics" });
    if (req.bootstrapSamples !== 0 && (req.bootstrapSamples < 100 || req.bootstrapSamples > 100_000)) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "bootstrap_samples: must be from 100 to 100000 (0 for the default, 1000)", { field: "bootstrap_samples" });
    if (req.confidenceLevel !== 0 && !(req.confidenceLevel > 0 && req.confidenceLevel < 1)) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "confidence_level: must be greater than 0 and less than 1", { field: "confidence_level" });
    const scores = async (r: RunRow) =>
      new Map((await this.t.selectFrom("predictions").select(["idx", "scores", "error"]).where("tenant", "=", tenant).where("run_id", "=", r.run_id).where("side", "=", "candidate").execute()).filter((p) => p.error === null).map((p) => [p.idx, p.scores]));
    const [sa, sb] = [await scores(a), await scores(b)];
    const pairs = [...sa.keys()].filter((i) => sb.has(i)).sort((x, y) => x - y);
    const differences = differencesOf(wanted, pairs.map((i) => ({ candidate: sa.get(i)!, baseline: sb.get(i)! })), {
      resamples: req.bootstrapSamples || 1000,
      level: req.confidenceLevel || 0.95,
      seed: req.seed ?? 42,
    });
    return { differences: differences.map((d) => MetricDifference.fromJSON(d)), pairedExampleCount: pairs.length };
  }
}
