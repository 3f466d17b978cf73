import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "@lathe/kit";
import { sql, type Kysely } from "kysely";
import { Counter, Gauge, Registry } from "prom-client";
import { schema, type TrainerTables } from "./db/tables.js";

/**
 * The trainer's Prometheus metrics, read from its database when scraped, so every replica reports
 * the whole installation (scrape one, or aggregate with max, not sum): queued and running jobs,
 * the training throughput of running jobs, and finished jobs by outcome, per tenant.
 */
export class TrainerMetrics {
  readonly registry = new Registry();

  constructor(db: Kysely<TrainerTables>) {
    const registry = this.registry;
    const jobs = `${schema}.jobs`;
    /** Queued and running jobs per tenant, from one query shared by the gauges of a scrape. */
    let live: Promise<{ tenant: string; queued: number; running: number; tokens_per_second: number }[]> | undefined;
    const liveJobs = () => {
      live ??= sql<{ tenant: string; queued: number; running: number; tokens_per_second: number }>`
        select tenant,
          count(*) filter (where state = 'QUEUED')::integer as queued,
          count(*) filter (where state = 'RUNNING')::integer as running,
          coalesce(sum((progress->>'tokensPerSecond')::float8) filter (where state = 'RUNNING' and lease_until >= now()), 0)::float8 as tokens_per_second
        from ${sql.table(jobs)}
        where state in ('QUEUED', 'RUNNING')
        group by tenant`
        .execute(db)
        .then((r) => r.rows)
        .finally(() => setImmediate(() => (live = undefined)));
      return live;
    };
    new Gauge({
      name: "lathe_trainer_queue_depth",
      help: "Fine-tuning jobs waiting for a slot, per tenant.",
      labelNames: ["tenant"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const r of await liveJobs()) this.set({ tenant: r.tenant }, r.queued);
      },
    });
    new Gauge({
      name: "lathe_trainer_jobs_running",
      help: "Fine-tuning jobs running (local workers and Kubernetes Jobs), per tenant.",
      labelNames: ["tenant"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const r of await liveJobs()) this.set({ tenant: r.tenant }, r.running);
      },
    });
    new Gauge({
      name: "lathe_trainer_tokens_per_second",
      help: "Training throughput of the running jobs at their last logged step, summed per tenant, in tokens (padding excluded) per second.",
      labelNames: ["tenant"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const r of await liveJobs()) this.set({ tenant: r.tenant }, r.tokens_per_second);
      },
    });
    new Counter({
      name: "lathe_trainer_jobs_finished_total",
      help: "Fine-tuning jobs that ended, per tenant and outcome (succeeded, failed, cancelled).",
      labelNames: ["tenant", "outcome"],
      registers: [registry],
      async collect() {
        this.reset();
        const { rows } = await sql<{ tenant: string; state: string; n: number }>`
          select tenant, state, count(*)::integer as n from ${sql.table(jobs)}
          where state in ('SUCCEEDED', 'FAILED', 'CANCELLED') group by tenant, state`.execute(db);
        for (const r of rows) this.inc({ tenant: r.tenant, outcome: r.state.toLowerCase() }, r.n);
      },
    });
    new Counter({
      name: "lathe_trainer_tokens_trained_total",
      help: "Tokens (padding excluded) the succeeded jobs trained on, over all their epochs, per tenant.",
      labelNames: ["tenant"],
      registers: [registry],
      async collect() {
        this.reset();
        const { rows } = await sql<{ tenant: string; tokens: number }>`
          select tenant, coalesce(sum((result->>'processedTokens')::float8), 0)::float8 as tokens from ${sql.table(jobs)}
          where state = 'SUCCEEDED' group by tenant`.execute(db);
        for (const r of rows) this.inc({ tenant: r.tenant }, r.tokens);
      },
    });
  }
}

/**
 * A small HTTP server for Prometheus (the trainer serves gRPC only): `GET /metrics` in the text
 * exposition format, `404` for anything else. Started with the service on
 * LATHE_TRAINER_METRICS_HOST:LATHE_TRAINER_METRICS_PORT.
 */
export class MetricsServer {
  private server: Server | undefined;

  constructor(
    private readonly metrics: TrainerMetrics,
    private readonly o: { host: string; port: number; logger: Logger },
  ) {}

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (req.method !== "GET" || path !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found: the trainer serves GET /metrics\n");
        return;
      }
      this.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.metrics.registry.contentType }).end(text),
        (err: unknown) => {
          this.o.logger.warn({ err }, "trainer metrics: reading them failed");
          res.writeHead(503, { "content-type": "text/plain" }).end("the trainer's metrics cannot be read now (its database did not answer)\n");
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => reject(new Error(`LATHE_TRAINER_METRICS_PORT: cannot listen on ${this.o.host}:${this.o.port} (${err.code ?? err.message})`)));
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    this.server = server;
    const { address, port } = server.address() as AddressInfo;
    this.o.logger.info({ address, port }, "trainer metrics: serving /metrics");
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
