import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { access, constants } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { delimiter, join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { freePort } from "./free-port.js";
import { tempDir } from "./temp-dir.js";
import { waitFor } from "./wait-for.js";

/** Options of {@link startNatsServer}. */
export interface StartNatsServerOptions {
  /** Enable JetStream with a store dir of its own (default true). */
  jetstream?: boolean;
}

/** A nats-server process owned by one test, which may stop and restart it at will. */
export interface NatsServerProcess {
  /** `nats://127.0.0.1:<port>`; stays valid across stop/start. */
  url: string;
  port: number;
  /** Stops the server (SIGTERM) and waits until it has exited; no-op when stopped. */
  stop(): Promise<void>;
  /** Starts it again on the same port and store dir, so JetStream state survives; no-op when running. */
  start(): Promise<void>;
  /** `stop()` then `start()`. */
  restart(): Promise<void>;
  /** Stops it and removes its store dir; call it in `afterAll`/`finally`. */
  dispose(): Promise<void>;
}

const BINARY = "nats-server";
const FALLBACK_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];
const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 10_000;

/**
 * Spawns a private `nats-server -a 127.0.0.1 -p <free port> -js -sd <fresh temp dir>` for tests
 * that must stop and restart NATS (never touch the shared server for that), and resolves once it
 * accepts connections and JetStream answers. Throws when the binary is missing, naming the package.
 */
export async function startNatsServer(opts: StartNatsServerOptions = {}): Promise<NatsServerProcess> {
  const binary = await findBinary();
  const jetstream = opts.jetstream ?? true;
  const port = await freePort();
  const dir = await tempDir("lathe-nats-");
  const args = ["-a", "127.0.0.1", "-p", String(port)];
  if (jetstream) args.push("-js", "-sd", dir.path);
  const url = `nats://127.0.0.1:${port}`;

  let child: ChildProcess | undefined;
  let disposed = false;
  // Operations run one after another, so a stop() racing a start() cannot leave two servers on one port.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = (fn: () => Promise<void>): Promise<void> => {
    const next = queue.then(fn);
    queue = next.catch(() => {});
    return next;
  };

  const stopNow = async (): Promise<void> => {
    if (child) await terminate(child);
    child = undefined;
  };
  const startNow = async (): Promise<void> => {
    if (disposed) throw new Error(`nats-server on port ${port} was disposed`);
    if (!child) child = await launch(binary, args, url, jetstream);
  };

  strays.dirs.add(dir.path);
  try {
    await serial(startNow);
  } catch (err) {
    strays.dirs.delete(dir.path);
    await dir.dispose();
    throw err;
  }

  return {
    url,
    port,
    stop: () => serial(stopNow),
    start: () => serial(startNow),
    restart: () => serial(async () => {
      await stopNow();
      await startNow();
    }),
    dispose: () =>
      serial(async () => {
        disposed = true;
        await stopNow();
        await dir.dispose();
        strays.dirs.delete(dir.path);
      }),
  };
}

/** Spawns the server and waits until it serves; kills it again if it never does. */
async function launch(binary: string, args: string[], url: string, jetstream: boolean): Promise<ChildProcess> {
  const proc = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  trackStray(proc);
  let log = "";
  proc.stderr?.setEncoding("utf8");
  proc.stderr?.on("data", (chunk: string) => {
    log = (log + chunk).slice(-4_000); // the tail explains an early exit (e.g. port taken)
  });
  const died = new Promise<never>((_, reject) => {
    proc.once("error", reject);
    proc.once("exit", (code, signal) =>
      reject(new Error(`${binary} ${args.join(" ")} exited (${signal ?? `code ${code}`}) before it was ready:\n${log}`)),
    );
  });
  died.catch(() => {}); // it also rejects on a later, intended stop
  try {
    await Promise.race([
      died,
      waitFor(() => serves(url, jetstream), { timeoutMs: READY_TIMEOUT_MS, intervalMs: 50, what: `nats-server at ${url}` }),
    ]);
  } catch (err) {
    await terminate(proc);
    throw err;
  }
  return proc;
}

/** True once the port accepts TCP and, if asked, JetStream answers (it recovers streams after start). */
async function serves(url: string, jetstream: boolean): Promise<boolean> {
  const { hostname, port } = new URL(url);
  if (!(await tcpOpen(hostname, Number(port)))) return false;
  const nc = await connect({ servers: url, timeout: 1_000, reconnect: false });
  try {
    if (jetstream) await (await jetstreamManager(nc)).getAccountInfo();
    return true;
  } finally {
    await nc.close();
  }
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    socket.setTimeout(1_000);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

/** SIGTERM (nats-server then flushes JetStream), SIGKILL if it lingers; resolves once it has exited. */
async function terminate(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_GRACE_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

async function findBinary(): Promise<string> {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...FALLBACK_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, BINARY);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; try the next dir
    }
  }
  throw new Error(
    `startNatsServer needs the ${BINARY} binary, found neither on PATH nor in ${FALLBACK_DIRS.join(", ")}; ` +
      `install it (Debian/Ubuntu: apt-get install nats-server)`,
  );
}

/**
 * Servers and store dirs still alive when the process exits (a test that forgot dispose(), or a
 * crash): killed and removed on exit so no nats-server outlives the test run.
 */
const strays = { procs: new Set<ChildProcess>(), dirs: new Set<string>(), hooked: false };

function trackStray(proc: ChildProcess): void {
  strays.procs.add(proc);
  proc.once("exit", () => strays.procs.delete(proc));
  if (strays.hooked) return;
  strays.hooked = true;
  process.once("exit", () => {
    for (const p of strays.procs) p.kill("SIGKILL");
    for (const d of strays.dirs) rmSync(d, { recursive: true, force: true });
  });
}
