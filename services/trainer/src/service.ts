import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { TrainerServiceService } from "@lathe/proto/lathe/trainer/v1/trainer_service";

/** The issue that builds this service; until then every RPC answers UNIMPLEMENTED naming it. */
export const pendingSubject = "the trainer service issue (fine-tuning jobs, scheduling, checkpoints, estimates), built on issue #3, Training engine";

/** gRPC handlers of TrainerService: decode → domain → encode. */
export function trainerHandlers(): ServiceHandlers<typeof TrainerServiceService> {
  return unimplementedHandlers(TrainerServiceService, pendingSubject);
}
