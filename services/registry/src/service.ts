import { invalidArgument, resolveImportPath, resourceName, type ImportRoots, type ServiceHandlers } from "@lathe/kit";
import type { Kysely } from "kysely";
import { ModelCard, type RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { RegistryTables } from "./db/migrations.js";
import { adapterName, parseVersionName, versionRequestBody, type AdapterStore } from "./domain/adapters.js";
import { receiveFolder, stageServerFolder } from "./domain/folders.js";
import type { AliasStore } from "./domain/aliases.js";
import { modelCard } from "./domain/card.js";
import { downloadVersion } from "./domain/download.js";
import { getLineage } from "./domain/lineage.js";
import { modelRequestBody, validateCreateModel, type ModelStore } from "./domain/models.js";
import type { ArtifactStore } from "@lathe/kit";

export interface RegistryParts {
  db: Kysely<RegistryTables>;
  models: ModelStore;
  adapters: AdapterStore;
  aliases: AliasStore;
  artifacts: ArtifactStore;
  cacheDir: string;
  /** The only server-side folders a caller may name (LATHE_IMPORT_ROOTS). */
  importRoots: ImportRoots;
  /** Where uploaded and imported folders are staged before they are checked and stored. */
  stagingDir: string;
}

/** gRPC handlers of RegistryService: decode → domain → encode. */
export function registryHandlers(p: RegistryParts): ServiceHandlers<typeof RegistryServiceService> {
  const { models, adapters, aliases } = p;
  const noFilter = (filter: string) => {
    if (filter !== "") throw invalidArgument("filter", "filtering is not supported yet; leave it empty");
  };
  return {
    async createModel(req, ctx) {
      const m = validateCreateModel(req);
      return {
        model: await models.create(ctx.tenant, m, modelRequestBody(req), async () => {
          const dir = await resolveImportPath(p.importRoots, "model.source_uri", m.sourceUri);
          return { folder: await stageServerFolder(p.importRoots, "model.source_uri", dir, p.stagingDir), shownAs: m.sourceUri, field: "model.source_uri" };
        }),
      };
    },
    async uploadModel(requests, ctx) {
      const { header, folder } = await receiveFolder(requests, p.stagingDir, ctx.signal);
      try {
        const m = validateCreateModel(header, "header.", false);
        return { model: await models.create(ctx.tenant, m, modelRequestBody(header, folder.files), async () => ({ folder, shownAs: "the uploaded folder", field: "file_header" })) };
      } finally {
        await folder.remove();
      }
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
      const uri = req.adapterVersion?.artifactUri ?? "";
      if (uri === "") throw invalidArgument("adapter_version.artifact_uri", "is required: the PEFT adapter folder, inside the server's import roots (or upload it with UploadAdapterVersion)");
      return {
        adapterVersion: await adapters.createVersion(ctx.tenant, req, `tenant:${ctx.tenant}`, versionRequestBody(req), async () => {
          const dir = await resolveImportPath(p.importRoots, "adapter_version.artifact_uri", uri);
          return { folder: await stageServerFolder(p.importRoots, "adapter_version.artifact_uri", dir, p.stagingDir), shownAs: uri, field: "adapter_version.artifact_uri" };
        }),
      };
    },
    async uploadAdapterVersion(requests, ctx) {
      const { header, folder } = await receiveFolder(requests, p.stagingDir, ctx.signal);
      try {
        return {
          adapterVersion: await adapters.createVersion(ctx.tenant, header, `tenant:${ctx.tenant}`, versionRequestBody(header, folder.files), async () => ({ folder, shownAs: "the uploaded folder", field: "file_header" })),
        };
      } finally {
        await folder.remove();
      }
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
      const base = await models.get(ctx.tenant, resourceName("models", modelId));
      const { aliases: list } = await aliases.list(ctx.tenant, { parent: adapterName(modelId, adapterId), pageSize: 1000, pageToken: "" });
      return { modelCard: ModelCard.fromPartial({ name: `${req.name}/modelCard`, markdown: modelCard(v, base, list, v.labels), createTime: new Date() }) };
    },
  };
}
