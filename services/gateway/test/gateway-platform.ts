import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, type TestPlatform } from "@lathe/testing";
import { gatewayOptionsOf, gatewayService, type GatewayHooks, type GatewayOptions } from "../src/index.js";

/** What a test reads of the embedded backend. */
export type BackendView = Parameters<NonNullable<GatewayHooks["onBackend"]>>[0];

/**
 * A platform with the registry and the gateway (HTTP on a free port, one llama.cpp thread, the
 * options given over the defaults), importing models from `importRoot`; resolves with its HTTP
 * base URL and the backend's counts.
 */
export async function startGatewayPlatform(importRoot: string, options: Partial<GatewayOptions>): Promise<{ t: TestPlatform; url: string; backend: BackendView }> {
  let url = "";
  let backend: BackendView | undefined;
  const t = await startTestPlatform({
    env: { LATHE_IMPORT_ROOTS: importRoot },
    factories: [
      createRegistryService,
      gatewayService({ ...gatewayOptionsOf({} as never), LATHE_GATEWAY_HTTP_PORT: 0, LATHE_GATEWAY_THREADS: 1, ...options }, { onHttpListening: (u) => (url = u), onBackend: (b) => (backend = b) }),
    ],
  });
  return { t, url, backend: backend! };
}
