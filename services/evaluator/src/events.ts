import { defineEvent } from "@lathe/kit";
import { EvaluationCompleted, EvaluationFailed } from "@lathe/proto/lathe/events/v1/evaluator_events";
import { AdapterVersionCreated } from "@lathe/proto/lathe/events/v1/registry_events";

/** Events the evaluator publishes: the registry applies promotion rules on `evaluation_completed`. */
export const evaluationCompleted = defineEvent("lathe.evaluator.v1.evaluation_completed", EvaluationCompleted);
export const evaluationFailed = defineEvent("lathe.evaluator.v1.evaluation_failed", EvaluationFailed);

/** Events the evaluator consumes: a registered version whose job asked for an evaluation. */
export const adapterVersionCreated = defineEvent("lathe.registry.v1.adapter_version_created", AdapterVersionCreated);
