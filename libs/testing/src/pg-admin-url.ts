import { containerStartError } from "./missing-server-error.js";
import { serverUrlResolver } from "./server-url.js";
import { type DockerProbe, loadTestcontainers, probeDocker } from "./testcontainers-runtime.js";

/** The env var that names an admin connection URL of a running PostgreSQL. */
export const PG_ENV = "LATHE_TEST_PG_URL";
const PG = { what: "PostgreSQL", envVar: PG_ENV, example: "postgres://postgres@127.0.0.1:5432/postgres" };
const PG_IMAGE = "postgres:16";


/**
 * The admin URL of the PostgreSQL that tests use: `LATHE_TEST_PG_URL` when set; else a postgres:16
 * container started once per process (testcontainers' reaper removes it when the process ends);
 * else an error that says what to set. `docker` is injectable so tests can fake a missing engine.
 */
export async function resolvePgAdminUrl(
  env: NodeJS.ProcessEnv,
  docker: DockerProbe = probeDocker,
): Promise<string> {
  return resolve(env, docker);
}

async function startContainer(): Promise<string> {
  try {
    const { GenericContainer, Wait } = await loadTestcontainers();
    const started = await new GenericContainer(PG_IMAGE)
      .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: "trust" })
      .withExposedPorts(5432)
      // The image's init script runs a temporary server first; the second "ready" line is the real one.
      .withWaitStrategy(
        Wait.forAll([Wait.forListeningPorts(), Wait.forLogMessage(/database system is ready to accept connections/, 2)]),
      )
      .withStartupTimeout(120_000)
      .start();
    return `postgres://postgres@${started.getHost()}:${started.getMappedPort(5432)}/postgres`;
  } catch (err) {
    throw containerStartError(PG, PG_IMAGE, err);
  }
}

const resolve = serverUrlResolver(PG, startContainer);
