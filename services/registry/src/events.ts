import { defineEvent } from "@lathe/kit";
import { ModelCreated, ModelDeleted } from "@lathe/proto/lathe/events/v1/registry_events";

/** Events the registry publishes. It consumes none yet (adapters and lineage: issue #5). */
export const modelCreated = defineEvent("lathe.registry.v1.model_created", ModelCreated);
export const modelDeleted = defineEvent("lathe.registry.v1.model_deleted", ModelDeleted);
