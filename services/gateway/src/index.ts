import { prepareService, type ServiceFactory } from "@lathe/kit";
import { GatewayServiceService } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { migrations } from "./db/migrations.js";
import { gatewayHandlers } from "./service.js";

export { configSchema } from "./config.js";

/** The gateway service: migrates its schema, serves GatewayService, relays its outbox. */
export const createGatewayService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, "gateway", migrations);
  return {
    name: "gateway",
    register(server) {
      server.add("lathe.gateway.v1.GatewayService", GatewayServiceService, gatewayHandlers());
    },
    start: base.start,
    stop: base.stop,
  };
};
