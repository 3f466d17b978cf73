import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { DatasetServiceService } from "@lathe/proto/lathe/dataset/v1/dataset_service";

/** The issue that builds this service; until then every RPC answers UNIMPLEMENTED naming it. */
export const pendingSubject = "issue #4, Dataset service: upload, validate, deduplicate, PII, token statistics, versions";

/** gRPC handlers of DatasetService: decode → domain → encode. */
export function datasetHandlers(): ServiceHandlers<typeof DatasetServiceService> {
  return unimplementedHandlers(DatasetServiceService, pendingSubject);
}
