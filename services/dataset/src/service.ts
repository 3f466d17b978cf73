import { invalidArgument, type ServiceHandlers } from "@lathe/kit";
import type { DatasetServiceService } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { DatasetRow } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { checkRows } from "./domain/check-rows.js";
import { checkContamination, deriveVersion } from "./domain/derive.js";
import { uploadVersion, type IngestDeps } from "./domain/ingest.js";

/** gRPC handlers of DatasetService: decode → domain → encode. */
export function datasetHandlers(deps: IngestDeps): ServiceHandlers<typeof DatasetServiceService> {
  const { store } = deps;
  return {
    async createDataset(req, ctx) {
      return { dataset: await store.createDataset(ctx.tenant, req) };
    },
    async getDataset(req, ctx) {
      return { dataset: await store.getDataset(ctx.tenant, req.name) };
    },
    async listDatasets(req, ctx) {
      if (req.filter !== "") throw invalidArgument("filter", "filtering datasets is not supported yet; leave it empty");
      return store.listDatasets(ctx.tenant, req);
    },
    async deleteDataset(req, ctx) {
      await store.deleteDataset(ctx.tenant, req.name, req.force);
      return {};
    },
    async uploadDatasetVersion(requests, ctx) {
      return { datasetVersion: await uploadVersion(deps, requests, ctx) };
    },
    async getDatasetVersion(req, ctx) {
      return { datasetVersion: (await store.version(ctx.tenant, "name", req.name)).version };
    },
    async listDatasetVersions(req, ctx) {
      if (req.filter !== "") throw invalidArgument("filter", "filtering versions is not supported yet; leave it empty");
      return store.listVersions(ctx.tenant, req);
    },
    async getQualityReport(req, ctx) {
      const name = req.name.replace(/\/qualityReport$/, "");
      return { qualityReport: (await store.version(ctx.tenant, "name", name)).report };
    },
    async deriveDatasetVersion(req, ctx) {
      return deriveVersion(deps, req, ctx);
    },
    async *streamDatasetRows(req, ctx) {
      const v = await store.version(ctx.tenant, "name", req.name);
      if (req.offset < 0) throw invalidArgument("offset", "must not be negative");
      if (req.limit < 0) throw invalidArgument("limit", "must not be negative");
      let left = req.limit === 0 ? Number.MAX_SAFE_INTEGER : req.limit;
      let offset = req.offset;
      while (left > 0 && !ctx.signal.aborted) {
        const page = await store.rows(v.key, { offset, limit: Math.min(left, 200), failingOnly: req.failingOnly });
        if (page.length === 0) return;
        yield { rows: page.map((r) => DatasetRow.fromPartial({ lineNumber: r.line, messages: r.messages, failedChecks: r.failedChecks, tokenCount: r.tokenCount })) };
        offset += page.length;
        left -= page.length;
      }
    },
    async checkContamination(req, ctx) {
      return checkContamination(deps, req, ctx);
    },
    async checkRows(req, ctx) {
      return checkRows(deps, req, ctx);
    },
  };
}
