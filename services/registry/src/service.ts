import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import { validateCreateModel, type ModelStore } from "./domain/models.js";

/** What the later registry issue builds; the RPCs not written yet answer UNIMPLEMENTED naming it. */
export const pendingSubject = "issue #5, Registry service: models import, adapters, versions, aliases, lineage, eval-gated promotion";

/** gRPC handlers of RegistryService: decode → domain → encode. */
export function registryHandlers(models: ModelStore): ServiceHandlers<typeof RegistryServiceService> {
  return {
    ...unimplementedHandlers(RegistryServiceService, pendingSubject),
    async createModel(req, ctx) {
      return { model: await models.create(ctx.tenant, validateCreateModel(req)) };
    },
    async getModel(req, ctx) {
      return { model: await models.get(ctx.tenant, req.name) };
    },
    async listModels(req, ctx) {
      return models.list(ctx.tenant, req);
    },
    async deleteModel(req, ctx) {
      await models.delete(ctx.tenant, req.name);
      return {};
    },
  };
}
