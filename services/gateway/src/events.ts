import { defineEvent } from "@lathe/kit";
import { DeploymentDeleted, DeploymentUpdated } from "@lathe/proto/lathe/events/v1/gateway_events";
import { AdapterVersionCreated, AliasMoved } from "@lathe/proto/lathe/events/v1/registry_events";
import {
  CheckpointSaved,
  FineTuningJobCancelled,
  FineTuningJobFailed,
  FineTuningJobProgressed,
  FineTuningJobQueued,
  FineTuningJobStarted,
  FineTuningJobSucceeded,
} from "@lathe/proto/lathe/events/v1/trainer_events";

/** Events the gateway publishes. */
export const deploymentUpdated = defineEvent("lathe.gateway.v1.deployment_updated", DeploymentUpdated);
export const deploymentDeleted = defineEvent("lathe.gateway.v1.deployment_deleted", DeploymentDeleted);

/** Events of other services the gateway consumes: a moved alias rolls out to the deployments serving it. */
export const aliasMoved = defineEvent("lathe.registry.v1.alias_moved", AliasMoved);

/**
 * The trainer's events (and the registry's new versions) of fine-tuning jobs, which the OpenAI
 * fine-tuning API records as its job events, results files and fine-tuned models.
 */
export const trainerEvents = {
  queued: defineEvent("lathe.trainer.v1.fine_tuning_job_queued", FineTuningJobQueued),
  started: defineEvent("lathe.trainer.v1.fine_tuning_job_started", FineTuningJobStarted),
  progressed: defineEvent("lathe.trainer.v1.fine_tuning_job_progressed", FineTuningJobProgressed),
  checkpointSaved: defineEvent("lathe.trainer.v1.checkpoint_saved", CheckpointSaved),
  succeeded: defineEvent("lathe.trainer.v1.fine_tuning_job_succeeded", FineTuningJobSucceeded),
  failed: defineEvent("lathe.trainer.v1.fine_tuning_job_failed", FineTuningJobFailed),
  cancelled: defineEvent("lathe.trainer.v1.fine_tuning_job_cancelled", FineTuningJobCancelled),
  adapterVersionCreated: defineEvent("lathe.registry.v1.adapter_version_created", AdapterVersionCreated),
};
