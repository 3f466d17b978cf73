import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { SynthGenServiceService } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";

/** The issue that builds this service; until then every RPC answers UNIMPLEMENTED naming it. */
export const pendingSubject = "the synthetic-data issue (generation jobs from a teacher model, review queue, publishing), not filed yet";

/** gRPC handlers of SynthGenService: decode → domain → encode. */
export function synthgenHandlers(): ServiceHandlers<typeof SynthGenServiceService> {
  return unimplementedHandlers(SynthGenServiceService, pendingSubject);
}
