import { Command } from "commander";
import { defaultDataDir, defaultPort, startLathe } from "../platform.js";

/** `lathe up`: the whole platform in this process, until SIGTERM or Ctrl-C. */
export function upCommand(): Command {
  return new Command("up")
    .description("run all six services in one process on one port (embedded Postgres and event bus unless told otherwise)")
    .option("--data-dir <dir>", "where state lives (default: LATHE_DATA_DIR, else ~/.lathe)")
    .option("--port <n>", "gRPC port", String(defaultPort))
    .option("--http-port <n>", "port of the OpenAI-compatible HTTP API (default: the gRPC port + 1)")
    .option("--host <addr>", "address to bind", "127.0.0.1")
    .option("--pg-url <url>", "use this Postgres instead of the embedded one")
    .option("--nats-url <url>", "use this NATS JetStream instead of the in-process bus")
    .option("--log-level <level>", "log level (trace … silent)", "info")
    .action(async (o: { dataDir?: string; port: string; httpPort?: string; host: string; pgUrl?: string; natsUrl?: string; logLevel: string }) => {
      const portOf = (flag: string, v: string) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${flag} ${v}: expected a port number`);
        return n;
      };
      const port = portOf("--port", o.port);
      const httpPort = o.httpPort === undefined ? undefined : portOf("--http-port", o.httpPort);
      const dataDir = o.dataDir ?? defaultDataDir();
      const { platform, httpUrl } = await startLathe({ dataDir, host: o.host, port, httpPort, pgUrl: o.pgUrl, natsUrl: o.natsUrl, logLevel: o.logLevel });
      const { deps } = platform;
      process.stdout.write(
        `lathe is up at ${platform.address}\n` +
          `  OpenAI-compatible HTTP: ${httpUrl}/v1\n` +
          `  services: registry, dataset, synthgen, trainer, evaluator, gateway\n` +
          `  database: ${o.pgUrl ? "postgres" : `embedded (${dataDir}/pg)`}, events: ${deps.bus.kind === "memory" ? "in-process" : "NATS JetStream"}\n` +
          `  API key:  ${dataDir}/api-key (tenant "default")\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.stdout.write("lathe: draining…\n");
          platform.stop({ exit: true }).then(resolve, resolve);
        };
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      });
      process.stdout.write("lathe: stopped\n");
    });
}
