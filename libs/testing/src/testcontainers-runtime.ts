import type * as TestcontainersModule from "testcontainers";
import { errorText } from "./wait-for.js";

/** The `testcontainers` module, loaded only when a test server must come from a container. */
export type Testcontainers = typeof TestcontainersModule;

/** Whether testcontainers can start containers here, and if not, why. */
export type DockerStatus = { available: true } | { available: false; reason: string };

/** Answers whether a Docker engine is usable; tests pass a fake one to exercise the error path. */
export type DockerProbe = () => Promise<DockerStatus>;

/** How long to wait for a container engine to answer before calling it absent. */
const PROBE_TIMEOUT_MS = 5_000;

/**
 * Loads testcontainers on demand. It is imported lazily because it is only needed where the
 * servers are not given by env, and because testcontainers 12 cannot even be loaded on Node 20
 * (its undici needs Node 22's zstd), which must become a clear message rather than a crash on import.
 */
export async function loadTestcontainers(): Promise<Testcontainers> {
  const mod = (await import("testcontainers")) as Testcontainers & { default?: Testcontainers };
  // Node exposes a CommonJS module's exports as `default`; prefer it over the lexer-detected names.
  return mod.default ?? mod;
}

let probed: Promise<DockerStatus> | undefined;

/**
 * Asks testcontainers for a container runtime, once per process, giving up after a few seconds.
 * Never throws: an absent engine is an expected state on CI machines.
 */
export function probeDocker(): Promise<DockerStatus> {
  probed ??= probeOnce();
  return probed;
}

async function probeOnce(): Promise<DockerStatus> {
  let tc: Testcontainers;
  try {
    tc = await loadTestcontainers();
  } catch (err) {
    return { available: false, reason: `testcontainers could not be loaded on Node ${process.version} (testcontainers 12 needs Node >= 22.22): ${errorText(err)}` };
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<DockerStatus>((resolve) => {
    timer = setTimeout(
      () => resolve({ available: false, reason: `no container runtime answered within ${PROBE_TIMEOUT_MS}ms` }),
      PROBE_TIMEOUT_MS,
    );
    timer.unref();
  });
  const probe = tc.getContainerRuntimeClient().then(
    (): DockerStatus => ({ available: true }),
    (err: unknown): DockerStatus => ({ available: false, reason: errorText(err) }),
  );
  try {
    return await Promise.race([probe, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
