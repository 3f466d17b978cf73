import { defineEvent } from "@lathe/kit";
import { AdapterVersionCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import {
  CheckpointSaved,
  FineTuningJobCancelled,
  FineTuningJobFailed,
  FineTuningJobProgressed,
  FineTuningJobQueued,
  FineTuningJobStarted,
  FineTuningJobSucceeded,
} from "@lathe/proto/lathe/events/v1/trainer_events";

/** Events the trainer publishes. */
export const fineTuningJobQueued = defineEvent("lathe.trainer.v1.fine_tuning_job_queued", FineTuningJobQueued);
export const fineTuningJobStarted = defineEvent("lathe.trainer.v1.fine_tuning_job_started", FineTuningJobStarted);
export const fineTuningJobProgressed = defineEvent("lathe.trainer.v1.fine_tuning_job_progressed", FineTuningJobProgressed);
export const checkpointSaved = defineEvent("lathe.trainer.v1.checkpoint_saved", CheckpointSaved);
export const fineTuningJobSucceeded = defineEvent("lathe.trainer.v1.fine_tuning_job_succeeded", FineTuningJobSucceeded);
export const fineTuningJobFailed = defineEvent("lathe.trainer.v1.fine_tuning_job_failed", FineTuningJobFailed);
export const fineTuningJobCancelled = defineEvent("lathe.trainer.v1.fine_tuning_job_cancelled", FineTuningJobCancelled);

/** Events of other services the trainer consumes: the adapter version made from a job. */
export const adapterVersionCreated = defineEvent("lathe.registry.v1.adapter_version_created", AdapterVersionCreated);
