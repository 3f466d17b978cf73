import { prepareService, type ServiceFactory } from "@lathe/kit";
import { EvaluatorServiceService } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { migrations } from "./db/migrations.js";
import { evaluatorHandlers } from "./service.js";

export { configSchema } from "./config.js";

/** The evaluator service: migrates its schema, serves EvaluatorService, relays its outbox. */
export const createEvaluatorService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, "evaluator", migrations);
  return {
    name: "evaluator",
    register(server) {
      server.add("lathe.evaluator.v1.EvaluatorService", EvaluatorServiceService, evaluatorHandlers());
    },
    start: base.start,
    stop: base.stop,
  };
};
