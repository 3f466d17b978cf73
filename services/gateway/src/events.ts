import { defineEvent } from "@lathe/kit";
import { DeploymentDeleted, DeploymentUpdated } from "@lathe/proto/lathe/events/v1/gateway_events";
import { AliasMoved } from "@lathe/proto/lathe/events/v1/registry_events";

/** Events the gateway publishes. */
export const deploymentUpdated = defineEvent("lathe.gateway.v1.deployment_updated", DeploymentUpdated);
export const deploymentDeleted = defineEvent("lathe.gateway.v1.deployment_deleted", DeploymentDeleted);

/** Events of other services the gateway consumes: a moved alias rolls out to the deployments serving it. */
export const aliasMoved = defineEvent("lathe.registry.v1.alias_moved", AliasMoved);
