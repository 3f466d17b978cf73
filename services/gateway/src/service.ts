import { unimplementedHandlers, type ServiceHandlers } from "@lathe/kit";
import { GatewayServiceService } from "@lathe/proto/lathe/gateway/v1/gateway_service";

/** The issue that builds this service; until then every RPC answers UNIMPLEMENTED naming it. */
export const pendingSubject = "issue 12 (deployments: create, get, list, update, delete)";

/** gRPC handlers of GatewayService: decode → domain → encode. */
export function gatewayHandlers(): ServiceHandlers<typeof GatewayServiceService> {
  return unimplementedHandlers(GatewayServiceService, pendingSubject);
}
