import { defineEvent } from "@lathe/kit";
import { DatasetVersionCreated } from "@lathe/proto/lathe/events/v1/dataset_events";
import { EvaluationCompleted } from "@lathe/proto/lathe/events/v1/evaluator_events";
import { DeploymentUpdated } from "@lathe/proto/lathe/events/v1/gateway_events";
import { GenerationJobSucceeded } from "@lathe/proto/lathe/events/v1/synthgen_events";
import { AdapterVersionCreated, AliasMoved, ModelCreated, ModelDeleted } from "@lathe/proto/lathe/events/v1/registry_events";
import { CheckpointSaved, FineTuningJobQueued, FineTuningJobSucceeded } from "@lathe/proto/lathe/events/v1/trainer_events";

/** Events the registry publishes. */
export const modelCreated = defineEvent("lathe.registry.v1.model_created", ModelCreated);
export const modelDeleted = defineEvent("lathe.registry.v1.model_deleted", ModelDeleted);
export const adapterVersionCreated = defineEvent("lathe.registry.v1.adapter_version_created", AdapterVersionCreated);
export const aliasMoved = defineEvent("lathe.registry.v1.alias_moved", AliasMoved);

/** Events of other services the registry consumes: lineage, registration, promotion. */
export const datasetVersionCreated = defineEvent("lathe.dataset.v1.dataset_version_created", DatasetVersionCreated);
export const fineTuningJobQueued = defineEvent("lathe.trainer.v1.fine_tuning_job_queued", FineTuningJobQueued);
export const checkpointSaved = defineEvent("lathe.trainer.v1.checkpoint_saved", CheckpointSaved);
export const fineTuningJobSucceeded = defineEvent("lathe.trainer.v1.fine_tuning_job_succeeded", FineTuningJobSucceeded);
export const evaluationCompleted = defineEvent("lathe.evaluator.v1.evaluation_completed", EvaluationCompleted);
export const deploymentUpdated = defineEvent("lathe.gateway.v1.deployment_updated", DeploymentUpdated);
export const generationJobSucceeded = defineEvent("lathe.synthgen.v1.generation_job_succeeded", GenerationJobSucceeded);
