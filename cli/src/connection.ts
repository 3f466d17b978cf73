import type { Client } from "@grpc/grpc-js";
import type { Command } from "commander";
import { createClient } from "@lathe/kit";
import { defaultDataDir, defaultPort, localApiKey } from "./platform.js";

/** Options every client command takes. */
export interface ConnectionOptions {
  server?: string;
  apiKey?: string;
  dataDir?: string;
  json?: boolean;
}

/** Adds the connection options every client command takes. */
export function withConnection(cmd: Command): Command {
  return cmd
    .option("--server <host:port>", "address of the Lathe API (default: the local `lathe up`, 127.0.0.1:50051)")
    .option("--api-key <key>", "API key (default: LATHE_API_KEY, else the key of the local `lathe up`)")
    .option("--data-dir <dir>", "data dir of the local `lathe up`, to find its key")
    .option("--json", "print machine-readable JSON");
}

/**
 * Where and as whom a client command connects: `--server` (default: the local `lathe up`,
 * 127.0.0.1:50051), `--api-key` or LATHE_API_KEY (default: the key `lathe up` made in its data dir).
 */
export function resolveConnection(opts: ConnectionOptions, env: NodeJS.ProcessEnv = process.env): { server: string; apiKey: string | undefined } {
  const server = opts.server ?? env["LATHE_SERVER"] ?? `127.0.0.1:${defaultPort}`;
  const apiKey = opts.apiKey ?? env["LATHE_API_KEY"] ?? localApiKey(opts.dataDir ?? defaultDataDir(env), false);
  return { server, apiKey };
}

type Ctor<C extends Client> = Parameters<typeof createClient<C>>[0];

/**
 * A client of `Ctor` on the resolved server. A unary call has 30 s; a streaming call (an upload,
 * a download, rows) has no total limit, however large, but is cancelled with `no progress for
 * 30 s` once nothing was sent or received for that long. A stream that sets its own deadline
 * (`jobs watch`: `{ deadline: Infinity }`) keeps it.
 */
export function connect<C extends Client>(Ctor: Ctor<C>, opts: ConnectionOptions): C {
  const { server, apiKey } = resolveConnection(opts);
  return createClient(Ctor, server, { apiKey, deadlineMs: 30_000, idleTimeoutMs: 30_000 });
}
