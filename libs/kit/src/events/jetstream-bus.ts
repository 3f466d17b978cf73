import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { connect, headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { subjectMatches, type BusMessage, type EventBus, type SubscribeOptions, type Subscription } from "./bus.js";

export interface JetStreamBusOptions {
  url: string;
  /** Environment prefix: subjects become `<prefix>.lathe.…` and the stream `LATHE_<PREFIX>`. */
  prefix?: string;
  /** Connection name shown by the NATS server. */
  name?: string;
  logger?: Logger;
  /** How long JetStream remembers event ids to drop repeated publishes. Default 10 minutes. */
  duplicateWindowMs?: number;
}

/**
 * The event bus on NATS JetStream: one stream over `lathe.>`, durable pull consumers with
 * explicit acks, publishes deduplicated by `Nats-Msg-Id` (the event id). The connection
 * reconnects forever, so a NATS restart delays events and loses none.
 */
export class JetStreamBus implements EventBus {
  readonly kind = "jetstream" as const;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly subjectPrefix: string,
    private readonly logger: Logger | undefined,
  ) {}

  static async connect(opts: JetStreamBusOptions): Promise<JetStreamBus> {
    const nc = await connect({
      servers: opts.url,
      name: opts.name ?? "lathe",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 5_000,
    });
    const jsm = await jetstreamManager(nc);
    const prefix = opts.prefix ?? "";
    const stream = prefix ? `LATHE_${prefix.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}` : "LATHE";
    const subjectPrefix = prefix ? `${prefix}.` : "";
    const config = {
      name: stream,
      subjects: [`${subjectPrefix}lathe.>`],
      duplicate_window: (opts.duplicateWindowMs ?? 10 * 60_000) * 1_000_000,
    };
    try {
      await jsm.streams.info(stream);
    } catch {
      try {
        await jsm.streams.add(config);
      } catch (err) {
        // Another process may have created it between the two calls.
        await jsm.streams.info(stream).catch(() => Promise.reject(err));
      }
    }
    return new JetStreamBus(nc, jetstream(nc), jsm, stream, subjectPrefix, opts.logger);
  }

  async publish(message: BusMessage): Promise<void> {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(message.headers)) h.set(k, v);
    await this.js.publish(this.subjectPrefix + message.subject, message.data, { msgID: message.id, headers: h, timeout: 5_000 });
  }

  async subscribe(opts: SubscribeOptions): Promise<Subscription> {
    const durable = this.subjectPrefix ? `${this.subjectPrefix.slice(0, -1)}_${opts.durable}` : opts.durable;
    const filters = opts.subjects.map((s) => this.subjectPrefix + s);
    // Several filter subjects need NATS 2.10; before that one consumer takes the stream's
    // subjects (or the single filter) and the rest is filtered here.
    const [major = 0, minor = 0] = (this.nc.info?.version ?? "0.0").split(".").map(Number);
    const multi = major > 2 || (major === 2 && minor >= 10);
    const filter = filters.length === 1 ? { filter_subject: filters[0] } : multi ? { filter_subjects: filters } : { filter_subject: `${this.subjectPrefix}lathe.>` };
    const wanted = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: 30_000_000_000,
      max_deliver: -1,
      // One message in flight: a message waiting for a retry holds back the ones behind it,
      // and nothing sits unacknowledged in a client buffer when the subscriber stops.
      max_ack_pending: 1,
      ...filter,
    };
    try {
      await this.jsm.consumers.info(this.stream, durable);
      await this.jsm.consumers.update(this.stream, durable, { ...filter, ack_wait: wanted.ack_wait, max_ack_pending: wanted.max_ack_pending });
    } catch {
      await this.jsm.consumers.add(this.stream, wanted);
    }
    const wants = (subject: string) => filters.some((f) => subjectMatches(f, subject));
    const consumer = await this.js.consumers.get(this.stream, durable);
    const messages = await consumer.consume({ max_messages: 64 });
    let stopping = false;
    const loop = (async () => {
      for await (const m of messages) {
        const headers: Record<string, string> = {};
        if (m.headers) for (const [k, v] of m.headers) if (v[0] !== undefined) headers[k] = v[0];
        const id = headers["Nats-Msg-Id"] ?? `${this.stream}:${m.seq}`;
        if (!wants(m.subject)) {
          m.ack();
          continue;
        }
        try {
          await opts.handler({ id, subject: m.subject.slice(this.subjectPrefix.length), data: m.data, headers, redelivered: m.redelivered });
          m.ack();
        } catch (err) {
          this.logger?.warn({ err, subject: m.subject, event_id: id, redeliveries: m.info.deliveryCount }, "event handler failed; will retry");
          m.nak(Math.min(100 * 2 ** m.info.deliveryCount, 10_000));
        }
        if (stopping) break;
      }
    })();
    return {
      stop: async () => {
        stopping = true;
        await messages.close();
        await loop;
      },
    };
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}
