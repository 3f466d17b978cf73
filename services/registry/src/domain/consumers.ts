import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { EventConsumer, traceHeaders, type EventBus, type Logger } from "@lathe/kit";
import type { Kysely } from "kysely";
import type { RegistryTables } from "../db/migrations.js";
import { checkpointSaved, datasetVersionCreated, deploymentUpdated, evaluationCompleted, fineTuningJobQueued, fineTuningJobSucceeded, generationJobSucceeded } from "../events.js";
import type { AliasStore } from "./aliases.js";
import { recordLineage } from "./lineage.js";
import { schema } from "./models.js";

/**
 * The registry's durable consumer: it builds the lineage graph from every service's events,
 * attaches evaluation results to adapter versions and applies promotion rules, and queues the
 * registration a finished job asked for. Each event is applied once, in one transaction.
 */
export function registryConsumer(opts: { db: Kysely<RegistryTables>; bus: EventBus; logger: Logger; aliases: AliasStore; onRegistration: () => void }): EventConsumer<RegistryTables> {
  const { aliases, logger } = opts;
  return new EventConsumer({ name: "registry", db: opts.db, schema, bus: opts.bus, logger })
    .on(datasetVersionCreated, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.datasetVersion, displayName: e.datasetVersion, digest: e.artifactDigest, time: meta.time ?? new Date() }, [e.parentVersion, e.generationJob]);
    })
    .on(fineTuningJobQueued, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.fineTuningJob, displayName: e.fineTuningJob, time: meta.time ?? new Date() }, [e.baseModel, e.trainDatasetVersion, e.evalDatasetVersion]);
    })
    .on(checkpointSaved, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.checkpoint, displayName: `step ${e.step}`, digest: e.artifactDigest, time: meta.time ?? new Date() }, [e.fineTuningJob]);
    })
    .on(fineTuningJobSucceeded, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.fineTuningJob, displayName: e.fineTuningJob, time: meta.time ?? new Date() }, [e.baseModel, e.trainDatasetVersion, e.evalDatasetVersion]);
      const reg = e.followUp?.registration;
      if (reg && reg.adapter !== "") {
        await trx
          .withSchema(schema)
          .insertInto("pending_registrations")
          .values({ tenant: meta.tenant, event_id: meta.eventId, job: e.fineTuningJob, request: JSON.stringify({ adapter: reg.adapter, description: reg.description, labels: reg.labels, artifactUri: e.adapterArtifactUri, artifactDigest: e.adapterArtifactDigest, method: e.method, checkpoint: e.checkpoint, trainDatasetVersion: e.trainDatasetVersion, evalDatasetVersion: e.evalDatasetVersion, chatTemplateFingerprint: e.chatTemplateFingerprint, ...(e.followUp ? { followUp: FollowUp.toJSON(e.followUp) } : {}), trace: traceHeaders() }) })
          .onConflict((oc) => oc.doNothing())
          .execute();
        opts.onRegistration();
      }
    })
    .on(evaluationCompleted, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.evaluationRun, displayName: e.evaluationRun, time: meta.time ?? new Date() }, [e.candidateAdapterVersion, e.baselineAdapterVersion, e.evalDatasetVersion, e.candidateModel, e.baselineModel]);
      if (e.candidateAdapterVersion === "") return;
      await trx
        .withSchema(schema)
        .insertInto("version_evaluations")
        .values({ tenant: meta.tenant, adapter_version: e.candidateAdapterVersion, evaluation_run: e.evaluationRun, metrics: JSON.stringify(e.candidateResults) })
        .onConflict((oc) => oc.doNothing())
        .execute();
      const outcome = await aliases.promote(trx, meta.tenant, { evaluationRun: e.evaluationRun, candidateAdapterVersion: e.candidateAdapterVersion, differences: e.differences, exampleCount: e.exampleCount, fineTuningJob: e.fineTuningJob, followUp: e.followUp });
      for (const h of outcome.held) logger.info({ alias: h.alias, evaluation_run: e.evaluationRun, satisfied: h.outcomes.map((o) => o.satisfied) }, "promotion rule did not hold");
    })
    .on(generationJobSucceeded, async (e, { trx, meta }) => {
      // A generation job: its seed set is an input; its teacher, outside the registry, is named.
      await recordLineage(trx, meta.tenant, { name: e.generationJob, displayName: e.teacher === "" ? e.generationJob : `generated with ${e.teacher}`, time: meta.time ?? new Date() }, [e.seedDatasetVersion]);
    })
    .on(deploymentUpdated, async (e, { trx, meta }) => {
      await recordLineage(trx, meta.tenant, { name: e.deployment, displayName: e.servedModelName, time: meta.time ?? new Date() }, [e.baseModel, ...e.adapters.flatMap((a) => [a.source, a.adapterVersion])]);
    });
}
