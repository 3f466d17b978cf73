import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { AppError, asAppError, cachedFolder, inSpan, resolveSecret, call, createClient, digestHex, enqueueEvents, LeaseLost, PollingLoop, TableLease, readDatasetRows, resourceName, tenantKey, tenantMetadata, type ArtifactStore, type Logger } from "@lathe/kit";
import { DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model_State, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { MetricDifference, MetricValue } from "@lathe/proto/lathe/type/v1/metric";
import { ReferenceScorer } from "@lathe/engine";
import { readModelConfig } from "@lathe/models";
import { ReferenceLikelihood } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { sql, type Kysely } from "kysely";
import type { Prices } from "../config.js";
import type { ChatTurn, EvaluatorTables, RunResults, Side } from "../db/migrations.js";
import { evaluationCompleted, evaluationFailed } from "../events.js";
import { differencesOf, priceOf, servingStatsOf, valuesOf } from "./aggregate.js";
import { EngineEncoder } from "./encoder.js";
import { drawShots, exampleOf, fewShotTurns } from "./examples.js";
import { ExampleRefused, GatewayClient } from "./generate.js";
import { combine, judgeResultOf, judgeTurns, readPreference } from "./judge.js";
import { schema, type RunRow } from "./runs.js";
import { Scorer } from "./scoring.js";
import { gatewayModelName } from "./spec.js";

export interface WorkerOptions {
  db: Kysely<EvaluatorTables>;
  artifacts: ArtifactStore;
  cacheDir: string;
  logger: Logger;
  apiKeys: Readonly<Record<string, string>>;
  peer: (s: "registry" | "dataset") => string;
  /** The gateway's OpenAI base URL (`…/v1`), or undefined when none is configured. */
  gatewayUrl: () => string | undefined;
  prices: Prices | undefined;
  bertscore: { model: string | undefined; layer: number; threads: number };
  concurrency: number;
  pollMs: number;
  leaseMs: number;
  /** A run changed (relay its events, wake its watchers): its key, `tenant/run_id`. */
  onChange: (key: string) => void;
}


/**
 * Works on evaluation runs: claims one (queued, or running with an expired lease: its worker was
 * lost) with a lease kept by heartbeats; pins its examples once (the eval rows, with few-shot turns
 * drawn from the training set where a side asks for them); generates each side's missing answers
 * through the gateway and scores each as it arrives, storing answer and scores together (so a
 * resumed run neither regenerates nor re-scores); then aggregates, and records the run SUCCEEDED
 * with its `evaluation_completed` event in one transaction, or FAILED with `evaluation_failed`.
 */
export class EvaluationWorker {
  private readonly loop: PollingLoop;
  private readonly lease: TableLease<RunRow>;
  readonly owner = `evaluator-${randomBytes(6).toString("hex")}`;

  constructor(private readonly o: WorkerOptions) {
    this.lease = new TableLease<RunRow>({ db: o.db, schema, table: "runs", id: "run_id", owner: this.owner, leaseMs: o.leaseMs });
    this.loop = new PollingLoop({ name: "evaluation worker", intervalMs: o.pollMs, logger: o.logger, tick: (signal) => this.tick(signal), retryMs: (n) => Math.min(30_000, o.pollMs * 2 ** n) });
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  notify(): void {
    this.loop.notify();
  }

  private get t() {
    return this.o.db.withSchema(schema);
  }

  /** Claims runs and works on them; a stopped worker gives its run back at once, to be resumed. */
  private tick(signal: AbortSignal): Promise<void> {
    return this.lease.work(signal, { claimed: (r) => this.o.onChange(`${r.tenant}/${r.run_id}`), run: (r) => inSpan("evaluator.evaluate", { "lathe.service": "evaluator", "lathe.evaluation_run": resourceName("evaluationRuns", r.run_id), "lathe.tenant": r.tenant }, r.trace ?? undefined, () => this.run(r, signal)), fail: (r, err) => this.fail(r, err) });
  }

  private async fail(r: RunRow, err: unknown): Promise<void> {
    const e = asAppError(err);
    if (e.code === "INTERNAL") this.o.logger.error({ err, run: r.run_id }, "evaluation run failed");
    const error = { code: e.code, reason: e.reason, message: e.code === "INTERNAL" ? "the evaluation failed; see the evaluator's log" : e.message };
    const name = resourceName("evaluationRuns", r.run_id);
    await this.o.db.transaction().execute(async (trx) => {
      const res = await trx
        .withSchema(schema)
        .updateTable("runs")
        .set({ state: "FAILED", error: JSON.stringify(error), end_time: sql`now()`, update_time: sql`now()`, lease_owner: null, lease_until: null })
        .where("tenant", "=", r.tenant)
        .where("run_id", "=", r.run_id)
        .where("lease_owner", "=", this.owner)
        .where("state", "=", "RUNNING")
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) return;
      await enqueueEvents(trx, schema, "evaluator", [
        { def: evaluationFailed, tenant: r.tenant, subject: name, payload: { evaluationRun: name, candidateAdapterVersion: r.spec.candidate.adapterVersion, fineTuningJob: r.fine_tuning_job, error: { ...error, metadata: {} } } },
      ]);
    });
    this.o.onChange(`${r.tenant}/${r.run_id}`);
  }

  private async run(r: RunRow, signal: AbortSignal): Promise<void> {
    const md = tenantMetadata(this.o.apiKeys, r.tenant);
    const url = this.o.gatewayUrl();
    if (url === undefined) throw new AppError("FAILED_PRECONDITION", "GATEWAY_NOT_CONFIGURED", "the evaluator has no gateway to generate answers through: set LATHE_EVALUATOR_GATEWAY_URL");
    const examples = await this.pinExamples(r, md);
    let encoder: EngineEncoder | undefined;
    const references: Partial<Record<Side, ReferenceScorer>> = {};
    try {
      if (r.spec.metrics.includes("bertscore")) encoder = await this.openEncoder(r, md);
      if (r.spec.metrics.includes("mean_token_accuracy")) {
        references.candidate = await this.openReferenceScorer(r.spec.candidate, "evaluation_run.candidate", md);
        if (r.spec.baseline) references.baseline = await this.openReferenceScorer(r.spec.baseline, "evaluation_run.baseline", md);
      }
      const scorer = new Scorer(r.spec.metrics, r.spec.formatCheck, encoder);
      const gateway = new GatewayClient(() => url, (tenant) => tenantKey(this.o.apiKeys, tenant));
      const sides: Side[] = r.spec.baseline ? ["candidate", "baseline"] : ["candidate"];
      const modelOf = { candidate: gatewayModelName(r.spec.candidate), baseline: r.spec.baseline ? gatewayModelName(r.spec.baseline) : "" };
      const promptOf = (e: (typeof examples)[number], side: Side) => (side === "candidate" ? e.prompt.candidate : (e.prompt.baseline ?? e.prompt.candidate));
      // A block of examples at a time, each side's answers together (one model, then the other:
      // a server serving one adapter at a time does not switch for every request), so progress
      // counts whole examples as it goes; what is stored is skipped.
      const done = new Set((await this.t.selectFrom("predictions").select(["side", "idx"]).where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).execute()).map((p) => `${p.side}/${p.idx}`));
      const block = Math.max(8, this.o.concurrency * 4);
      const pending: { e: (typeof examples)[number]; side: Side }[] = [];
      for (let first = 0; first < examples.length; first += block) {
        const chunk = examples.slice(first, first + block);
        for (const side of sides) for (const e of chunk) if (!done.has(`${side}/${e.idx}`)) pending.push({ e, side });
      }
      // One untimed request per side first: the first answer would otherwise carry the gateway's model loading in its latency.
      if (pending.length > 0) {
        for (const side of sides) {
          await gateway.chat(r.tenant, modelOf[side], promptOf(examples[0]!, side), { ...r.spec.generation, maxTokens: 1 }, signal).catch((err: unknown) => {
            if (signal.aborted) throw new LeaseLost();
            if (!(err instanceof ExampleRefused)) throw err;
          });
        }
      }
      let sinceBeat = Date.now();
      let next = 0;
      const work = async () => {
        while (next < pending.length) {
          if (signal.aborted) throw new LeaseLost();
          if (Date.now() - sinceBeat > this.o.leaseMs / 3) {
            sinceBeat = Date.now();
            if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
          }
          const { e, side } = pending[next++]!;
          await this.answer(r, side, e.idx, modelOf[side], promptOf(e, side), e.reference, gateway, scorer, references[side], signal);
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.o.concurrency, Math.max(1, pending.length)) }, work));
      if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
      if (r.spec.judge) await this.judge(r, r.spec.judge, examples, url, signal);
      await this.finish(r, encoder);
    } finally {
      await encoder?.free();
      await Promise.all(Object.values(references).map((x) => x.free()));
    }
  }

  /** Generates, scores and stores one answer (an example the gateway refuses is stored with its reason). */
  private async answer(r: RunRow, side: Side, idx: number, model: string, turns: ChatTurn[], reference: string, gateway: GatewayClient, scorer: Scorer, references: ReferenceScorer | undefined, signal: AbortSignal): Promise<void> {
    let row;
    try {
      const a = await gateway.chat(r.tenant, model, turns, r.spec.generation, signal);
      // Postgres text cannot hold NUL, which a model can generate: it is kept (and scored) as U+FFFD.
      const text = a.text.replaceAll("\u0000", "\ufffd");
      const scores = await scorer.score(text, reference);
      // Teacher forcing of the reference after the same prompt: mean token accuracy (when any of its tokens fit the context) and eval loss.
      const ref = references ? await references.score([...turns, { role: "assistant", content: reference }]) : undefined;
      if (ref && ref.tokens > 0) scores.mean_token_accuracy = ref.correct / ref.tokens;
      const teacher = ref ? { reference_loss: ref.lossSum, reference_tokens: ref.tokens, reference_correct: ref.correct, reference_truncated: ref.truncated } : {};
      row = { text, finish_reason: a.finishReason, prompt_tokens: a.promptTokens, completion_tokens: a.completionTokens, latency_ms: a.latencyMs, error: null, scores: JSON.stringify(scores), ...teacher };
    } catch (err) {
      if (signal.aborted) throw new LeaseLost();
      if (!(err instanceof ExampleRefused)) throw err;
      row = { text: "", finish_reason: "", prompt_tokens: 0, completion_tokens: 0, latency_ms: 0, error: err.message, scores: "{}" };
    }
    await this.t.insertInto("predictions").values({ tenant: r.tenant, run_id: r.run_id, side, idx, ...row }).onConflict((oc) => oc.doNothing()).execute();
    this.o.onChange(`${r.tenant}/${r.run_id}`);
  }

  /**
   * Asks the run's judge about every example both sides answered and that is not judged yet:
   * twice, the candidate's answer as A and then as B, storing both replies and the verdict.
   */
  private async judge(r: RunRow, j: NonNullable<RunRow["spec"]["judge"]>, examples: { idx: number; prompt: { candidate: ChatTurn[]; baseline: ChatTurn[] | null }; reference: string }[], gatewayUrl: string, signal: AbortSignal): Promise<void> {
    const preds = await this.t.selectFrom("predictions").select(["side", "idx", "text"]).where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).where("error", "is", null).execute();
    const done = new Set((await this.t.selectFrom("judgments").select("idx").where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).execute()).map((x) => x.idx));
    const answer = new Map(preds.map((p) => [`${p.side}/${p.idx}`, p.text]));
    const pending = examples.filter((e) => !done.has(e.idx) && answer.has(`candidate/${e.idx}`) && answer.has(`baseline/${e.idx}`));
    if (pending.length === 0) return;
    const key = j.baseUrl === "" ? tenantKey(this.o.apiKeys, r.tenant) : await resolveSecret(j.apiKeySecret, "the judge's API key");
    const client = new GatewayClient(() => j.baseUrl || gatewayUrl, () => key, j.baseUrl === "" ? "the gateway (the judge)" : `the judge at ${j.baseUrl}`);
    const settings = { temperature: 0, topP: 1, maxTokens: 32, seed: r.spec.seed, stop: [] };
    // The conversation the answers reply to, without few-shot turns where a side has none.
    const promptOf = (e: (typeof examples)[number]) => (r.spec.candidate.fewShot === null ? e.prompt.candidate : (e.prompt.baseline ?? e.prompt.candidate));
    const ask = async (turns: ReturnType<typeof judgeTurns>) => {
      try {
        return (await client.chat(r.tenant, j.model, turns, settings, signal)).text;
      } catch (err) {
        if (signal.aborted) throw new LeaseLost();
        if (err instanceof ExampleRefused) return `(refused: ${err.message})`;
        throw err;
      }
    };
    let next = 0;
    let sinceBeat = Date.now();
    const work = async () => {
      while (next < pending.length) {
        if (signal.aborted) throw new LeaseLost();
        if (Date.now() - sinceBeat > this.o.leaseMs / 3) {
          sinceBeat = Date.now();
          if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
        }
        const e = pending[next++]!;
        const cand = answer.get(`candidate/${e.idx}`)!;
        const base = answer.get(`baseline/${e.idx}`)!;
        const first = (await ask(judgeTurns(promptOf(e), e.reference, cand, base, j.criteria))).replaceAll("\u0000", "\ufffd");
        const second = (await ask(judgeTurns(promptOf(e), e.reference, base, cand, j.criteria))).replaceAll("\u0000", "\ufffd");
        const { verdict } = combine(readPreference(first), readPreference(second));
        await this.t.insertInto("judgments").values({ tenant: r.tenant, run_id: r.run_id, idx: e.idx, first, second, verdict }).onConflict((oc) => oc.doNothing()).execute();
        this.o.onChange(`${r.tenant}/${r.run_id}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency, pending.length) }, work));
    if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
  }

  /** The run's examples, pinned on its first attempt (eval rows, few-shot turns per side), read back on later ones. */
  private async pinExamples(r: RunRow, md: ReturnType<typeof tenantMetadata>) {
    const pinned = await this.t.selectFrom("examples").selectAll().where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).orderBy("idx").execute();
    if (pinned.length > 0) return pinned;
    const dataset = createClient(DatasetServiceClient, this.o.peer("dataset"), { deadlineMs: 60_000 });
    let rows;
    try {
      const evalRows = await readDatasetRows(dataset, md, r.spec.evalDatasetVersion, "evaluation_run.eval_dataset_version");
      let evals = evalRows.map(exampleOf).filter((e) => e !== undefined);
      if (r.spec.maxExamples > 0) evals = evals.slice(0, r.spec.maxExamples);
      if (evals.length === 0) throw new AppError("FAILED_PRECONDITION", "NO_EVAL_EXAMPLES", `${r.spec.evalDatasetVersion} has no rows that end with an assistant answer to compare with`, { field: "evaluation_run.eval_dataset_version" });
      const shotsOf = async (field: string, m: RunRow["spec"]["candidate"] | null) => {
        if (!m?.fewShot) return null;
        const train = await readDatasetRows(dataset, md, m.fewShot.datasetVersion, `${field}.few_shot.dataset_version`);
        return drawShots(train, evals, m.fewShot, `${field}.few_shot.dataset_version`);
      };
      const candidateShots = await shotsOf("evaluation_run.candidate", r.spec.candidate);
      const baselineShots = await shotsOf("evaluation_run.baseline", r.spec.baseline);
      rows = evals.map((e, idx) => ({
        tenant: r.tenant,
        run_id: r.run_id,
        idx,
        reference: e.reference,
        prompt: JSON.stringify({
          candidate: candidateShots ? fewShotTurns(e, candidateShots) : e.turns,
          baseline: r.spec.baseline ? (baselineShots ? fewShotTurns(e, baselineShots) : e.turns) : null,
        }),
      }));
    } finally {
      dataset.close();
    }
    await this.o.db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += 500) await trx.withSchema(schema).insertInto("examples").values(rows.slice(i, i + 500)).onConflict((oc) => oc.doNothing()).execute();
      await trx.withSchema(schema).updateTable("runs").set({ total: rows.length, update_time: sql`now()` }).where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).execute();
    });
    this.o.onChange(`${r.tenant}/${r.run_id}`);
    return this.t.selectFrom("examples").selectAll().where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).orderBy("idx").execute();
  }

  /** BERTScore's encoder: the run's model, else the configured one, read from the artifact store by the registry's digest. */
  private async openEncoder(r: RunRow, md: ReturnType<typeof tenantMetadata>): Promise<EngineEncoder> {
    const name = r.spec.bertscoreModel || this.o.bertscore.model;
    if (!name) throw new AppError("FAILED_PRECONDITION", "BERTSCORE_MODEL_MISSING", "BERTScore needs an encoder: set the run's bertscore_model or LATHE_EVALUATOR_BERTSCORE_MODEL", { field: "evaluation_run.bertscore_model" });
    const registry = createClient(RegistryServiceClient, this.o.peer("registry"), { deadlineMs: 30_000 });
    try {
      const { model } = await call(registry, "getModel", { name }, md).catch((err: unknown) => {
        if (err instanceof AppError && err.code === "NOT_FOUND") throw new AppError("FAILED_PRECONDITION", "BERTSCORE_MODEL_MISSING", `the BERTScore encoder ${name} is not a registered model`, { field: "evaluation_run.bertscore_model" });
        throw err;
      });
      if (!model || model.state !== Model_State.STATE_READY) throw new AppError("FAILED_PRECONDITION", "BERTSCORE_MODEL_MISSING", `the BERTScore encoder ${name} is not ready`);
      const dir = await cachedFolder(this.o.artifacts, digestHex(model.artifactDigest), join(this.o.cacheDir, "models"));
      return await EngineEncoder.open(dir, model.artifactDigest, this.o.bertscore.layer, this.o.bertscore.threads);
    } finally {
      registry.close();
    }
  }

  /**
   * Teacher forcing's model for one side: the registered model's weights (and its adapter
   * version's), read from the artifact store by the registry's digests, cut at the model's context.
   */
  private async openReferenceScorer(m: RunRow["spec"]["candidate"], field: string, md: ReturnType<typeof tenantMetadata>): Promise<ReferenceScorer> {
    const registry = createClient(RegistryServiceClient, this.o.peer("registry"), { deadlineMs: 30_000 });
    try {
      const { model } = await call(registry, "getModel", { name: m.model }, md);
      if (!model || model.state !== Model_State.STATE_READY) throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_READY", `${field}.model: ${m.model} is not ready, so its weights cannot score the references (mean token accuracy)`, { field: `${field}.model` });
      const modelDir = await cachedFolder(this.o.artifacts, digestHex(model.artifactDigest), join(this.o.cacheDir, "models"));
      let adapterDir: string | undefined;
      if (m.adapterVersion !== "") {
        const { adapterVersion } = await call(registry, "getAdapterVersion", { name: m.adapterVersion }, md);
        if (!adapterVersion?.artifactDigest) throw new AppError("FAILED_PRECONDITION", "ADAPTER_VERSION_NOT_READY", `${field}.adapter_version: ${m.adapterVersion} has no files yet`, { field: `${field}.adapter_version` });
        adapterDir = await cachedFolder(this.o.artifacts, digestHex(adapterVersion.artifactDigest), join(this.o.cacheDir, "adapters"));
      }
      const config = await readModelConfig(modelDir);
      return await ReferenceScorer.open(modelDir, { adapterDir, numThreads: this.o.bertscore.threads, maxSeqLength: config.contextLength > 0 ? config.contextLength : 2048 });
    } finally {
      registry.close();
    }
  }

  /** Aggregates the stored answers and records the run SUCCEEDED with its `evaluation_completed` event, if it is still this worker's. */
  private async finish(r: RunRow, encoder: EngineEncoder | undefined): Promise<void> {
    const preds = await this.t.selectFrom("predictions").selectAll().where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).orderBy("idx").execute();
    const ok = (side: Side) => preds.filter((p) => p.side === side && p.error === null);
    const b = { resamples: r.spec.bootstrapSamples, level: r.spec.confidenceLevel, seed: r.spec.seed };
    const cand = ok("candidate");
    const base = r.spec.baseline ? ok("baseline") : [];
    const baseByIdx = new Map(base.map((p) => [p.idx, p]));
    const pairs = cand.filter((p) => baseByIdx.has(p.idx)).map((p) => ({ candidate: p.scores, baseline: baseByIdx.get(p.idx)!.scores }));
    const serving = (side: Side, rows: typeof cand) => servingStatsOf(rows.map((p) => ({ promptTokens: p.prompt_tokens, completionTokens: p.completion_tokens, latencyMs: p.latency_ms })), priceOf(this.o.prices, gatewayModelName(side === "candidate" ? r.spec.candidate : r.spec.baseline!)));
    if (cand.length === 0) throw new AppError("FAILED_PRECONDITION", "NO_ANSWERS", `no answer could be generated for any of the ${r.total} examples; see lathe evals predictions`);
    const results: RunResults = {
      candidateResults: valuesOf(r.spec.metrics, cand.map((p) => p.scores), b),
      baselineResults: r.spec.baseline ? valuesOf(r.spec.metrics, base.map((p) => p.scores), b) : [],
      differences: r.spec.baseline ? differencesOf(r.spec.metrics, pairs, b) : [],
      candidateServing: serving("candidate", cand),
      baselineServing: r.spec.baseline ? serving("baseline", base) : null,
      bertscoreModelDigest: encoder?.id.split("#")[0] ?? "",
      bertscoreLayer: encoder?.layer ?? 0,
      ...(r.spec.judge ? { judgeResult: judgeResultOf(r.spec.judge.model, await this.t.selectFrom("judgments").select(["first", "second"]).where("tenant", "=", r.tenant).where("run_id", "=", r.run_id).orderBy("idx").execute(), b) } : {}),
      ...(r.spec.metrics.includes("mean_token_accuracy") ? { candidateLikelihood: likelihoodOf(cand), baselineLikelihood: r.spec.baseline ? likelihoodOf(base) : undefined } : {}),
    };
    const name = resourceName("evaluationRuns", r.run_id);
    const done = await this.o.db.transaction().execute(async (trx) => {
      const res = await trx
        .withSchema(schema)
        .updateTable("runs")
        .set({ state: "SUCCEEDED", results: JSON.stringify(results), end_time: sql`now()`, update_time: sql`now()`, lease_owner: null, lease_until: null })
        .where("tenant", "=", r.tenant)
        .where("run_id", "=", r.run_id)
        .where("lease_owner", "=", this.owner)
        .where("state", "=", "RUNNING")
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) return false;
      await enqueueEvents(trx, schema, "evaluator", [
        {
          def: evaluationCompleted,
          tenant: r.tenant,
          subject: name,
          payload: {
            evaluationRun: name,
            candidateModel: r.spec.candidate.model,
            candidateAdapterVersion: r.spec.candidate.adapterVersion,
            baselineModel: r.spec.baseline?.model ?? "",
            baselineAdapterVersion: r.spec.baseline?.adapterVersion ?? "",
            evalDatasetVersion: r.spec.evalDatasetVersion,
            fineTuningJob: r.fine_tuning_job,
            candidateResults: results.candidateResults.map((v) => MetricValue.fromJSON(v)),
            baselineResults: results.baselineResults.map((v) => MetricValue.fromJSON(v)),
            differences: results.differences.map((v) => MetricDifference.fromJSON(v)),
            exampleCount: cand.length,
            ...(r.follow_up ? { followUp: FollowUp.fromJSON(r.follow_up) } : {}),
          },
        },
      ]);
      return true;
    });
    if (!done) throw new LeaseLost();
    this.o.logger.info({ run: r.run_id, tenant: r.tenant, examples: cand.length }, "evaluation run succeeded");
    this.o.onChange(`${r.tenant}/${r.run_id}`);
  }
}

/** The token-weighted eval loss, perplexity and mean token accuracy of one side's stored teacher forcing (proto JSON of ReferenceLikelihood). */
function likelihoodOf(preds: readonly { reference_loss: number | null; reference_tokens: number | null; reference_correct: number | null; reference_truncated: boolean | null }[]): unknown {
  const scored = preds.filter((p) => p.reference_loss !== null && (p.reference_tokens ?? 0) > 0);
  const tokens = scored.reduce((n, p) => n + p.reference_tokens!, 0);
  const loss = tokens === 0 ? 0 : scored.reduce((n, p) => n + p.reference_loss!, 0) / tokens;
  return ReferenceLikelihood.toJSON({
    evalLoss: loss,
    perplexity: Math.exp(loss),
    meanTokenAccuracy: tokens === 0 ? 0 : scored.reduce((n, p) => n + p.reference_correct!, 0) / tokens,
    tokenCount: tokens,
    exampleCount: scored.length,
    truncatedExampleCount: preds.filter((p) => p.reference_truncated === true).length,
  });
}
