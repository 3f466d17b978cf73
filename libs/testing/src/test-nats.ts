import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { NATS_ENV, resolveNatsUrl } from "./nats-url.js";
import { randomHex } from "./random-token.js";
import { errorText } from "./wait-for.js";

/** A NATS server to use plus a token that keeps this test's subjects and streams apart. */
export interface TestNats {
  /** Server URL, e.g. `nats://127.0.0.1:4222`. */
  url: string;
  /** `t` + 10 lowercase hex chars: use it as subject prefix and stream-name suffix. */
  prefix: string;
}

const reachable = new Map<string, Promise<void>>();

/**
 * A shared NATS JetStream server (`LATHE_TEST_NATS_URL`, else a testcontainers nats:2, else a
 * clear error) and a prefix unique to this call, so parallel tests never see each other's events.
 */
export async function testNats(): Promise<TestNats> {
  const url = await resolveNatsUrl(process.env);
  await checkReachable(url);
  return { url, prefix: `t${randomHex(5)}` };
}

/** Checks once per URL per process that JetStream answers, so a stopped server fails with a clear message. */
function checkReachable(url: string): Promise<void> {
  let check = reachable.get(url);
  if (!check) {
    check = (async () => {
      const source = process.env[NATS_ENV]?.trim() ? ` (from ${NATS_ENV})` : "";
      try {
        const nc = await connect({ servers: url, timeout: 5_000, reconnect: false });
        try {
          await (await jetstreamManager(nc)).getAccountInfo();
        } finally {
          await nc.close();
        }
      } catch (err) {
        reachable.delete(url);
        throw new Error(`NATS with JetStream at ${url}${source} does not answer: ${errorText(err)}`, { cause: err });
      }
    })();
    reachable.set(url, check);
  }
  return check;
}

/**
 * Deletes every JetStream stream whose name contains `prefix` (compared case-insensitively,
 * since stream names are often upper-cased). Best effort: errors are ignored, because it runs in
 * teardown where a failure would hide the test's own result.
 */
export async function cleanupNatsPrefix(url: string, prefix: string): Promise<void> {
  const needle = prefix.toLowerCase();
  if (!needle) return; // an empty prefix would match, and delete, every stream
  try {
    const nc = await connect({ servers: url, timeout: 5_000, reconnect: false });
    try {
      const jsm = await jetstreamManager(nc);
      const doomed: string[] = [];
      for await (const name of jsm.streams.names()) {
        if (name.toLowerCase().includes(needle)) doomed.push(name);
      }
      await Promise.all(doomed.map((name) => jsm.streams.delete(name).catch(() => false)));
    } finally {
      await nc.close();
    }
  } catch {
    // best effort, see above
  }
}
