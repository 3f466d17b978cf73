import type { Metadata } from "@grpc/grpc-js";
import { AppError, call, createClient, inSpan, isRetryable, PollingLoop, tenantMetadata, traceHeaders, type Logger } from "@lathe/kit";
import { AdapterVersionCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import { sql, type Kysely, type Transaction } from "kysely";
import type { EvaluatorTables } from "../db/migrations.js";
import { schema } from "./runs.js";
import { EvaluationRun } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { RunStore } from "./runs.js";

/** The baseline a follow-up names: a version, an alias (its version now; the base model while it points nowhere), a model, or by default the promotion alias's version, else the base model. */
async function baselineOf(e: AdapterVersionCreated, md: Metadata, registryAddress: string): Promise<{ model: string; adapterVersion: string }> {
  const ev = e.followUp!.evaluation!;
  let name = ev.baseline;
  if (name === "" && e.followUp?.promotion?.alias) name = `${e.adapter}/aliases/${e.followUp.promotion.alias}`;
  if (name === "" || /^models\/[^/]+$/.test(name)) return { model: name || e.baseModel, adapterVersion: "" };
  let version = name;
  if (name.includes("/aliases/")) {
    const registry = createClient(RegistryServiceClient, registryAddress, { deadlineMs: 30_000 });
    try {
      version = (await call(registry, "getAlias", { name }, md).catch((err: unknown) => {
        if (err instanceof AppError && err.code === "NOT_FOUND") return { alias: undefined };
        throw err;
      })).alias?.adapterVersion ?? "";
    } finally {
      registry.close();
    }
  }
  // An alias that points nowhere yet, or at the new version itself: the base model is the baseline.
  if (version === "" || version === e.adapterVersion) return { model: e.baseModel, adapterVersion: "" };
  return { model: version.split("/").slice(0, 2).join("/"), adapterVersion: version };
}

/**
 * The run a registered version's follow-up asks for (its job carried evaluation settings): the
 * new version as the candidate against its baseline, on the follow-up's eval set (else the job's).
 * Created with a request id of the version, so an event applied twice makes one run.
 */
export async function createFollowUpRun(e: AdapterVersionCreated, tenant: string, md: Metadata, o: { runs: RunStore; registryAddress: string; logger: Logger }): Promise<void> {
  const ev = e.followUp?.evaluation;
  if (!ev) return;
  const evalSet = ev.evalDatasetVersion || e.evalDatasetVersion;
  if (evalSet === "") {
    o.logger.warn({ adapter_version: e.adapterVersion, job: e.fineTuningJob }, "the job asked for an evaluation but names no eval dataset version; none is run");
    return;
  }
  const baseline = await baselineOf(e, md, o.registryAddress);
  await o.runs.create(
    tenant,
    {
      evaluationRunId: "",
      evaluationRun: EvaluationRun.fromPartial({
        displayName: `${e.adapterVersion} against ${baseline.adapterVersion || baseline.model}`,
        candidate: { model: e.baseModel, adapterVersion: e.adapterVersion },
        baseline,
        evalDatasetVersion: evalSet,
        metrics: ev.metrics,
        formatCheck: ev.formatCheck,
        generationParams: ev.generationParams,
        maxExamples: ev.maxExamples,
      }),
      requestId: `follow-up:${e.adapterVersion}`,
    },
    e.fineTuningJob,
    e.followUp,
  );
}

/** The most attempts one follow-up gets. */
const MAX_ATTEMPTS = 10;

/**
 * The follow-ups of registered versions: noted in the transaction that consumes
 * `adapter_version_created` (`note`), turned into runs outside it by a polling loop, retried while
 * they fail for a passing reason (the registry unreachable) and given up, with the error kept,
 * when they cannot succeed.
 */
export class FollowUpQueue {
  private readonly loop: PollingLoop;

  constructor(
    private readonly o: { db: Kysely<EvaluatorTables>; runs: RunStore; registryAddress: () => string; apiKeys: Readonly<Record<string, string>>; logger: Logger; pollMs: number },
  ) {
    this.loop = new PollingLoop({ name: "evaluator: follow-ups", intervalMs: o.pollMs, logger: o.logger, tick: (signal) => this.tick(signal) });
  }

  /** Notes an event's follow-up in the consumer's transaction (with the trace it continues). */
  static async note(trx: Transaction<EvaluatorTables>, tenant: string, eventId: string, e: AdapterVersionCreated): Promise<void> {
    if (!e.followUp?.evaluation) return;
    await trx
      .withSchema(schema)
      .insertInto("pending_follow_ups")
      .values({ event_id: eventId, tenant, event: JSON.stringify(AdapterVersionCreated.toJSON(e)), trace: JSON.stringify(traceHeaders()) })
      .onConflict((oc) => oc.doNothing())
      .execute();
  }

  start(): void {
    this.loop.start();
  }

  notify(): void {
    this.loop.notify();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  private async tick(signal: AbortSignal): Promise<void> {
    const t = this.o.db.withSchema(schema);
    const pending = await t.selectFrom("pending_follow_ups").selectAll().where("last_error", "is", null).limit(10).execute();
    for (const p of pending) {
      if (signal.aborted) return;
      const e = AdapterVersionCreated.fromJSON(p.event);
      try {
        await inSpan("evaluator.follow_up", { "lathe.service": "evaluator", "lathe.adapter_version": e.adapterVersion }, p.trace ?? undefined, () =>
          createFollowUpRun(e, p.tenant, tenantMetadata(this.o.apiKeys, p.tenant), { runs: this.o.runs, registryAddress: this.o.registryAddress(), logger: this.o.logger }),
        );
        await t.deleteFrom("pending_follow_ups").where("event_id", "=", p.event_id).execute();
      } catch (err) {
        const final = !isRetryable(err) || p.attempts + 1 >= MAX_ATTEMPTS;
        await t
          .updateTable("pending_follow_ups")
          .set({ attempts: sql`attempts + 1`, last_error: final ? (err as Error).message : null })
          .where("event_id", "=", p.event_id)
          .execute();
        this.o.logger.warn({ err, adapter_version: e.adapterVersion, final }, "starting the evaluation a job asked for failed");
      }
    }
  }
}
