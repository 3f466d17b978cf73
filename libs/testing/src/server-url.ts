import { missingServerError } from "./missing-server-error.js";
import type { DockerProbe } from "./testcontainers-runtime.js";

/**
 * How tests reach a shared server: the URL in its env var when set; else a container started
 * once per process (a failed start is not cached, so a later call tries again); else an error
 * that says which variable to set.
 */
export function serverUrlResolver(
  server: { what: string; envVar: string; example: string },
  startContainer: () => Promise<string>,
): (env: NodeJS.ProcessEnv, docker: DockerProbe) => Promise<string> {
  let container: Promise<string> | undefined;
  return async (env, docker) => {
    const fromEnv = env[server.envVar]?.trim();
    if (fromEnv) return fromEnv;
    const status = await docker();
    if (!status.available) throw missingServerError({ ...server, reason: status.reason });
    container ??= startContainer().catch((err: unknown) => {
      container = undefined;
      throw err;
    });
    return container;
  };
}
