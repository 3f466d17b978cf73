import { invalidArgument, type ServiceHandlers } from "@lathe/kit";
import type { Kysely } from "kysely";
import { ModelCard, type RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { RegistryTables } from "./db/migrations.js";
import { parseVersionName, type AdapterStore } from "./domain/adapters.js";
import type { AliasStore } from "./domain/aliases.js";
import { modelCard } from "./domain/card.js";
import { downloadVersion } from "./domain/download.js";
import { getLineage } from "./domain/lineage.js";
import { validateCreateModel, type ModelStore } from "./domain/models.js";
import type { ArtifactStore } from "@lathe/kit";

export interface RegistryParts {
  db: Kysely<RegistryTables>;
  models: ModelStore;
  adapters: AdapterStore;
  aliases: AliasStore;
  artifacts: ArtifactStore;
  cacheDir: string;
}

/** gRPC handlers of RegistryService: decode → domain → encode. */
export function registryHandlers(p: RegistryParts): ServiceHandlers<typeof RegistryServiceService> {
  const { models, adapters, aliases } = p;
  const noFilter = (filter: string) => {
    if (filter !== "") throw invalidArgument("filter", "filtering is not supported yet; leave it empty");
  };
  return {
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
    async createAdapter(req, ctx) {
      return { adapter: await adapters.create(ctx.tenant, req) };
    },
    async getAdapter(req, ctx) {
      return { adapter: await adapters.get(ctx.tenant, req.name) };
    },
    async listAdapters(req, ctx) {
      noFilter(req.filter);
      return adapters.list(ctx.tenant, req);
    },
    async deleteAdapter(req, ctx) {
      await adapters.delete(ctx.tenant, req.name, req.force);
      return {};
    },
    async createAdapterVersion(req, ctx) {
      return { adapterVersion: await adapters.createVersion(ctx.tenant, req, `tenant:${ctx.tenant}`) };
    },
    async getAdapterVersion(req, ctx) {
      return { adapterVersion: await adapters.getVersion(ctx.tenant, req.name) };
    },
    async listAdapterVersions(req, ctx) {
      noFilter(req.filter);
      return adapters.listVersions(ctx.tenant, req);
    },
    async *downloadAdapterVersion(req, ctx) {
      const v = await adapters.getVersion(ctx.tenant, req.name);
      yield* downloadVersion(p.artifacts, p.cacheDir, { adapterDigest: v.artifactDigest, baseDigest: v.baseModelDigest }, req.format, req.ggufType, ctx.signal);
    },
    async setAlias(req, ctx) {
      return { alias: await aliases.set(ctx.tenant, req) };
    },
    async getAlias(req, ctx) {
      return { alias: await aliases.get(ctx.tenant, req.name) };
    },
    async listAliases(req, ctx) {
      return aliases.list(ctx.tenant, req);
    },
    async rollbackAlias(req, ctx) {
      return { alias: await aliases.rollback(ctx.tenant, req) };
    },
    async setPromotionRule(req, ctx) {
      return { promotionRule: await aliases.setRule(ctx.tenant, req) };
    },
    async getPromotionRule(req, ctx) {
      return { promotionRule: await aliases.getRule(ctx.tenant, req.name) };
    },
    async getLineage(req, ctx) {
      return getLineage(p.db, ctx.tenant, req);
    },
    async getModelCard(req, ctx) {
      const { modelId, adapterId } = parseVersionName("name", req.name);
      const v = await adapters.getVersion(ctx.tenant, req.name);
      const base = await models.get(ctx.tenant, `models/${modelId}`);
      const { aliases: list } = await aliases.list(ctx.tenant, { parent: `models/${modelId}/adapters/${adapterId}`, pageSize: 1000, pageToken: "" });
      return { modelCard: ModelCard.fromPartial({ name: `${req.name}/modelCard`, markdown: modelCard(v, base, list, v.labels), createTime: new Date() }) };
    },
  };
}
