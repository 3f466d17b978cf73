import { randomUUID } from "node:crypto";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import { traceHeaders } from "../telemetry.js";

/** The ts-proto codec of an event message; every event has `meta` as its field 1. */
export interface EventCodec<T extends { meta?: EventMeta | undefined }> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
  fromPartial(object: Partial<T>): T;
}

/** An event type: its NATS subject (`lathe.<domain>.v1.<event>`) and its protobuf codec. */
export interface EventDef<T extends { meta?: EventMeta | undefined }> {
  readonly subject: string;
  readonly codec: EventCodec<T>;
}

export function defineEvent<T extends { meta?: EventMeta | undefined }>(subject: string, codec: EventCodec<T>): EventDef<T> {
  if (!/^lathe\.[a-z]+\.v\d+\.[a-z][a-z0-9_]*$/.test(subject)) throw new Error(`bad event subject ${subject}`);
  return { subject, codec };
}

/** What a service says when it announces a change; the kit adds id, time and trace context. */
export interface NewEvent<T extends { meta?: EventMeta | undefined }> {
  def: EventDef<T>;
  /** The tenant that owns the resource. */
  tenant: string;
  /** The resource name the event speaks of. */
  subject: string;
  /** The event's own fields (everything but `meta`). */
  payload: Omit<Partial<T>, "meta">;
}

/** An event ready for the outbox: encoded, with its id and the current trace headers. */
export interface EncodedEvent {
  id: string;
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
}

export function encodeEvent<T extends { meta?: EventMeta | undefined }>(source: string, e: NewEvent<T>): EncodedEvent {
  const id = randomUUID();
  const trace = traceHeaders();
  const meta: EventMeta = {
    eventId: id,
    time: new Date(),
    traceparent: trace["traceparent"] ?? "",
    tracestate: trace["tracestate"] ?? "",
    subject: e.subject,
    tenant: e.tenant,
    source,
  };
  const message = e.def.codec.fromPartial({ ...(e.payload as Partial<T>), meta } as Partial<T>);
  return { id, subject: e.def.subject, data: e.def.codec.encode(message).finish(), headers: { ...trace, "lathe-event": e.def.subject } };
}
