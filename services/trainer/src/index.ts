import { prepareService, type ServiceFactory } from "@lathe/kit";
import { TrainerServiceService } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { migrations } from "./db/migrations.js";
import { trainerHandlers } from "./service.js";

export { configSchema } from "./config.js";

/** The trainer service: migrates its schema, serves TrainerService, relays its outbox. */
export const createTrainerService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, "trainer", migrations);
  return {
    name: "trainer",
    register(server) {
      server.add("lathe.trainer.v1.TrainerService", TrainerServiceService, trainerHandlers());
    },
    start: base.start,
    stop: base.stop,
  };
};
