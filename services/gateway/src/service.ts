import { callerMetadata, type ServiceHandlers } from "@lathe/kit";
import type { GatewayServiceService } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import type { DeploymentStore } from "./domain/deployments.js";
import type { RegistryModels } from "./domain/registry.js";
import type { Rollout } from "./domain/rollout.js";

export interface GatewayParts {
  deployments: DeploymentStore;
  registry: RegistryModels;
  rollout: Rollout;
}

/** gRPC handlers of GatewayService: decode → domain → encode. */
export function gatewayHandlers(p: GatewayParts): ServiceHandlers<typeof GatewayServiceService> {
  // A spec is checked with the registry as the caller sees it (their key), before it is stored.
  const resolveAs = (ctx: Parameters<typeof callerMetadata>[0]) => (spec: Parameters<RegistryModels["resolveSpec"]>[0]) => p.registry.resolveSpec(spec, callerMetadata(ctx));
  return {
    async createDeployment(req, ctx) {
      return { deployment: await p.deployments.create(ctx.tenant, req, resolveAs(ctx)) };
    },
    async getDeployment(req, ctx) {
      return { deployment: await p.deployments.get(ctx.tenant, req.name) };
    },
    async listDeployments(req, ctx) {
      return p.deployments.list(ctx.tenant, req);
    },
    async updateDeployment(req, ctx) {
      return { deployment: await p.deployments.update(ctx.tenant, req, resolveAs(ctx)) };
    },
    async deleteDeployment(req, ctx) {
      const row = await p.deployments.delete(ctx.tenant, req.name, req.etag);
      await p.rollout.retire(row, row.served, undefined);
      return {};
    },
  };
}
