import { defineEvent } from "@lathe/kit";
import { DatasetValidated, DatasetVersionCreated } from "@lathe/proto/lathe/events/v1/dataset_events";

/** Events the dataset service publishes, both with every new version. It consumes none yet. */
export const datasetVersionCreated = defineEvent("lathe.dataset.v1.dataset_version_created", DatasetVersionCreated);
export const datasetValidated = defineEvent("lathe.dataset.v1.dataset_validated", DatasetValidated);
