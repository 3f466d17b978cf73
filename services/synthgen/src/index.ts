import { prepareService, type ServiceFactory } from "@lathe/kit";
import { SynthGenServiceService } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { migrations } from "./db/migrations.js";
import { synthgenHandlers } from "./service.js";

export { configSchema } from "./config.js";

/** The synthgen service: migrates its schema, serves SynthGenService, relays its outbox. */
export const createSynthGenService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, "synthgen", migrations);
  return {
    name: "synthgen",
    register(server) {
      server.add("lathe.synthgen.v1.SynthGenService", SynthGenServiceService, synthgenHandlers());
    },
    start: base.start,
    stop: base.stop,
  };
};
