import type { ServiceHandlers } from "@lathe/kit";
import type { EvaluatorServiceService } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import type { RunStore } from "./domain/runs.js";

export interface EvaluatorParts {
  runs: RunStore;
  /** How often WatchEvaluationRun looks for changes made by other processes, in ms. */
  watchPollMs: number;
}

/** gRPC handlers of EvaluatorService: decode → domain → encode. */
export function evaluatorHandlers(p: EvaluatorParts): ServiceHandlers<typeof EvaluatorServiceService> {
  return {
    async createEvaluationRun(req, ctx) {
      return { evaluationRun: await p.runs.create(ctx.tenant, req) };
    },
    async getEvaluationRun(req, ctx) {
      return { evaluationRun: await p.runs.get(ctx.tenant, req.name) };
    },
    async listEvaluationRuns(req, ctx) {
      return p.runs.list(ctx.tenant, req);
    },
    async *watchEvaluationRun(req, ctx) {
      for await (const evaluationRun of p.runs.watch(ctx.tenant, req.name, ctx.signal, p.watchPollMs)) yield { evaluationRun };
    },
    async cancelEvaluationRun(req, ctx) {
      return { evaluationRun: await p.runs.cancel(ctx.tenant, req.name) };
    },
    async compareEvaluationRuns(req, ctx) {
      return p.runs.compare(ctx.tenant, req);
    },
    async listEvaluationPredictions(req, ctx) {
      return p.runs.predictions(ctx.tenant, req);
    },
  };
}
