/** A message on the event bus: an encoded event under a subject such as `lathe.registry.v1.model_created`. */
export interface BusMessage {
  /** The event id; the bus drops a second publish of the same id (JetStream `Nats-Msg-Id`). */
  readonly id: string;
  /** The subject without the environment prefix; the bus adds and strips the prefix. */
  readonly subject: string;
  readonly data: Uint8Array;
  /** W3C trace headers and the event type. */
  readonly headers: Readonly<Record<string, string>>;
}

export interface Delivery extends BusMessage {
  /** True when an earlier delivery of this message was not acknowledged. */
  readonly redelivered: boolean;
}

export interface SubscribeOptions {
  /** The durable consumer's name: a restarted subscriber resumes where it stopped. */
  durable: string;
  /** Subjects to receive (NATS wildcards `*` and `>` allowed), without the prefix. */
  subjects: readonly string[];
  /**
   * Handles one delivery; resolving acknowledges it, throwing has it delivered again later.
   * Deliveries of one subscription arrive one at a time, in order.
   */
  handler: (delivery: Delivery) => Promise<void>;
}

export interface Subscription {
  /** Stops receiving after the delivery in progress. The durable position is kept. */
  stop(): Promise<void>;
}

/**
 * The event bus of Lathe: JetStream in a cluster, an in-process bus in the embedded default;
 * services use only this interface, so both behave alike (at-least-once, ordered per
 * subscription, publish deduplicated by event id).
 */
export interface EventBus {
  readonly kind: "jetstream" | "memory";
  /** Resolves once the bus has durably accepted the message. */
  publish(message: BusMessage): Promise<void>;
  subscribe(opts: SubscribeOptions): Promise<Subscription>;
  close(): Promise<void>;
}

/** Whether a NATS subject matches a pattern with `*` (one token) and `>` (the rest). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== "*" && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
