import { callerMetadata, type CallContext, type ServiceHandlers } from "@lathe/kit";
import type { SynthGenServiceService } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import type { Kysely } from "kysely";
import type { SynthgenTables } from "./db/migrations.js";
import type { JobStore } from "./domain/jobs.js";
import { publishJob } from "./domain/publish.js";
import { datasetChecks } from "./domain/quality.js";
import { turnsOf } from "./domain/spec.js";
import { AppError } from "@lathe/kit";

export interface SynthgenParts {
  db: Kysely<SynthgenTables>;
  jobs: JobStore;
  datasetAddress: () => string;
  onChange: (key: string) => void;
  watchPollMs: number;
}

/** Who decided a review item: the `x-lathe-user` the caller names (a person's email, say), else its tenant. */
function reviewerOf(ctx: CallContext): string {
  const user = ctx.metadata.get("x-lathe-user")[0];
  return typeof user === "string" && user.trim() !== "" ? user.trim().slice(0, 200) : `tenant:${ctx.tenant}`;
}

/** gRPC handlers of SynthGenService: decode → domain → encode. */
export function synthgenHandlers(p: SynthgenParts): ServiceHandlers<typeof SynthGenServiceService> {
  return {
    async createGenerationJob(req, ctx) {
      return { generationJob: await p.jobs.create(ctx.tenant, req) };
    },
    async getGenerationJob(req, ctx) {
      return { generationJob: await p.jobs.get(ctx.tenant, req.name) };
    },
    async listGenerationJobs(req, ctx) {
      return p.jobs.list(ctx.tenant, req);
    },
    async *watchGenerationJob(req, ctx) {
      for await (const generationJob of p.jobs.watch(ctx.tenant, req.name, ctx.signal, p.watchPollMs)) yield { generationJob };
    },
    async cancelGenerationJob(req, ctx) {
      return { generationJob: await p.jobs.cancel(ctx.tenant, req.name, req.reason) };
    },
    async listReviewItems(req, ctx) {
      return p.jobs.reviewItems(ctx.tenant, req);
    },
    async approveReviewItem(req, ctx) {
      if (req.correctedExample) {
        // A correction must pass the job's checks, as the generated example did.
        const turns = turnsOf("corrected_example", req.correctedExample);
        const job = await p.jobs.row(ctx.tenant, "name", req.name.split("/reviewItems/")[0] ?? "");
        const failed = await datasetChecks(p.datasetAddress(), callerMetadata(ctx), turns, job.spec.checkOptions);
        if (failed) throw new AppError("INVALID_ARGUMENT", "CORRECTION_FAILS_CHECKS", `corrected_example: fails the job's ${failed.reason} check (${failed.detail})`, { field: "corrected_example" });
      }
      return { reviewItem: await p.jobs.decide(ctx.tenant, req.name, { approve: true, corrected: req.correctedExample, note: req.note }, reviewerOf(ctx)) };
    },
    async rejectReviewItem(req, ctx) {
      return { reviewItem: await p.jobs.decide(ctx.tenant, req.name, { approve: false, note: req.reason }, reviewerOf(ctx)) };
    },
    async publishGenerationJob(req, ctx) {
      return publishJob({ db: p.db, jobs: p.jobs, datasetAddress: p.datasetAddress(), onChange: p.onChange }, ctx.tenant, callerMetadata(ctx), req);
    },
  };
}
