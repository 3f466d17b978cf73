import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The model and adapter labels of a served name: `tiny:support@prod` is model `tiny`, adapter `support@prod`. */
export function modelLabels(id: string): { model: string; adapter: string } {
  const colon = id.indexOf(":");
  return colon < 0 ? { model: id, adapter: "" } : { model: id.slice(0, colon), adapter: id.slice(colon + 1) };
}

/** What the backends report for the gauges: per loaded base model, its contexts, busy sequences and queue. */
export type BackendStats = () => Promise<{ base: string; contexts: number; busy: number; queued: number; maxContexts: number; contextBytes: number }[]>;

/**
 * The gateway's Prometheus metrics (served on `/metrics`): requests by route, model, adapter and
 * HTTP status; prompt and completion tokens; latency and time to first token; and, read from the
 * embedded backend when scraped, loaded contexts, busy sequences and queue depth per base model.
 * Model labels are only names the caller's key resolved, so an unknown name adds no series.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: "lathe_gateway_requests_total", help: "Requests answered, by route, model, adapter and HTTP status.", labelNames: ["route", "model", "adapter", "status"], registers: [this.registry] });
  private readonly tokens = new Counter({ name: "lathe_gateway_tokens_total", help: "Tokens in (prompt) and out (completion), by model and adapter.", labelNames: ["model", "adapter", "direction"], registers: [this.registry] });
  private readonly latency = new Histogram({
    name: "lathe_gateway_request_duration_seconds",
    help: "Time from a request's arrival to its last byte, by route, model and adapter.",
    labelNames: ["route", "model", "adapter"],
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly ttft = new Histogram({
    name: "lathe_gateway_time_to_first_token_seconds",
    help: "Time from a request's arrival to its first generated text, by model and adapter.",
    labelNames: ["model", "adapter"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  constructor(stats: BackendStats) {
    const registry = this.registry;
    new Gauge({
      name: "lathe_gateway_contexts_loaded",
      help: "llama.cpp contexts loaded (one per adapter in use), per base model.",
      labelNames: ["base"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await stats()) this.set({ base: s.base }, s.contexts);
      },
    });
    new Gauge({
      name: "lathe_gateway_contexts_max",
      help: "Contexts kept at most per base model: LATHE_GATEWAY_MAX_CONTEXTS, or fewer when LATHE_GATEWAY_CONTEXT_MEMORY_MB holds fewer.",
      labelNames: ["base"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await stats()) this.set({ base: s.base }, s.maxContexts);
      },
    });
    new Gauge({
      name: "lathe_gateway_sequences_busy",
      help: "Sequences generating now, per base model.",
      labelNames: ["base"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await stats()) this.set({ base: s.base }, s.busy);
      },
    });
    new Gauge({
      name: "lathe_gateway_queue_depth",
      help: "Requests waiting for a sequence, per base model.",
      labelNames: ["base"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await stats()) this.set({ base: s.base }, s.queued);
      },
    });
  }

  /** Records one finished request. `model` is the resolved name, or undefined when it did not resolve. */
  observe(o: { route: string; model: string | undefined; status: number; seconds: number; ttftSeconds?: number | undefined; promptTokens?: number; completionTokens?: number }): void {
    const l = o.model === undefined ? { model: "", adapter: "" } : modelLabels(o.model);
    this.requests.inc({ route: o.route, ...l, status: String(o.status) });
    this.latency.observe({ route: o.route, ...l }, o.seconds);
    if (o.ttftSeconds !== undefined) this.ttft.observe(l, o.ttftSeconds);
    if (o.promptTokens) this.tokens.inc({ ...l, direction: "prompt" }, o.promptTokens);
    if (o.completionTokens) this.tokens.inc({ ...l, direction: "completion" }, o.completionTokens);
  }
}
