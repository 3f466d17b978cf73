import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { EvaluatorServiceService } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";

/** The issue that builds this service; until then every RPC answers UNIMPLEMENTED naming it. */
export const pendingSubject = "the evaluator issue (evaluation runs, ROUGE-L, BERTScore, format compliance, comparisons), not filed yet";

/** gRPC handlers of EvaluatorService: decode → domain → encode. */
export function evaluatorHandlers(): ServiceHandlers<typeof EvaluatorServiceService> {
  return unimplementedHandlers(EvaluatorServiceService, pendingSubject);
}
