import { defineEvent } from "@lathe/kit";
import { ExamplesPublished, GenerationJobFailed, GenerationJobSucceeded } from "@lathe/proto/lathe/events/v1/synthgen_events";

/** Events the synthetic-data service publishes. */
export const generationJobSucceeded = defineEvent("lathe.synthgen.v1.generation_job_succeeded", GenerationJobSucceeded);
export const generationJobFailed = defineEvent("lathe.synthgen.v1.generation_job_failed", GenerationJobFailed);
export const examplesPublished = defineEvent("lathe.synthgen.v1.examples_published", ExamplesPublished);
