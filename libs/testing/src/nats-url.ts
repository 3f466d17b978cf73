import { containerStartError } from "./missing-server-error.js";
import { serverUrlResolver } from "./server-url.js";
import { type DockerProbe, loadTestcontainers, probeDocker } from "./testcontainers-runtime.js";

/** The env var that names a running NATS server with JetStream enabled. */
export const NATS_ENV = "LATHE_TEST_NATS_URL";
const NATS = { what: "NATS (with JetStream)", envVar: NATS_ENV, example: "nats://127.0.0.1:4222" };
const NATS_IMAGE = "nats:2";


/**
 * The URL of the NATS server that tests share: `LATHE_TEST_NATS_URL` when set; else a nats:2
 * container with JetStream started once per process; else an error that says what to set.
 * `docker` is injectable so tests can fake a missing engine.
 */
export async function resolveNatsUrl(env: NodeJS.ProcessEnv, docker: DockerProbe = probeDocker): Promise<string> {
  return resolve(env, docker);
}

async function startContainer(): Promise<string> {
  try {
    const { GenericContainer, Wait } = await loadTestcontainers();
    const started = await new GenericContainer(NATS_IMAGE)
      .withCommand(["-js"])
      .withExposedPorts(4222)
      .withWaitStrategy(Wait.forLogMessage(/Server is ready/))
      .withStartupTimeout(60_000)
      .start();
    return `nats://${started.getHost()}:${started.getMappedPort(4222)}`;
  } catch (err) {
    throw containerStartError(NATS, NATS_IMAGE, err);
  }
}

const resolve = serverUrlResolver(NATS, startContainer);
