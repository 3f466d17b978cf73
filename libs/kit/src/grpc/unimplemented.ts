import { unimplemented } from "../errors.js";
import type { ServiceDef, ServiceHandlers } from "./handlers.js";

/**
 * Handlers for every method of a service that answer UNIMPLEMENTED, naming the issue that will
 * build them (`subject`). A service spreads its real handlers over these, so the API is served
 * whole from day one and each gap says where it will be filled.
 */
export function unimplementedHandlers<S extends ServiceDef>(def: S, subject: string): ServiceHandlers<S> {
  const out: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(def)) {
    const name = method.path.slice(1).replace("/", ".");
    out[key] = method.responseStream
      ? async function* () {
          yield* [];
          throw unimplemented(name, subject);
        }
      : async () => {
          throw unimplemented(name, subject);
        };
  }
  return out as ServiceHandlers<S>;
}
