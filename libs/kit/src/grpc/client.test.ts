import { Metadata } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { callerMetadata } from "./client.js";

const metadataOf = (entries: Record<string, string>): Metadata => {
  const md = new Metadata();
  for (const [k, v] of Object.entries(entries)) md.set(k, v);
  return md;
};

describe("callerMetadata", () => {
  it("forwards the caller's authorization header, and nothing else it sent", () => {
    const md = callerMetadata({ metadata: metadataOf({ authorization: "Bearer k1", "x-api-key": "k2", "x-request-id": "r", traceparent: "t" }) });
    expect(md.getMap()).toEqual({ authorization: "Bearer k1" });
  });

  it("forwards x-api-key when that is how the caller sent its key", () => {
    expect(callerMetadata({ metadata: metadataOf({ "x-api-key": "k2" }) }).getMap()).toEqual({ "x-api-key": "k2" });
  });

  it("is empty for a caller that sent no key, and a fresh copy each time", () => {
    expect(callerMetadata({ metadata: new Metadata() }).getMap()).toEqual({});
    const caller = metadataOf({ authorization: "Bearer k1" });
    const md = callerMetadata({ metadata: caller });
    md.set("authorization", "Bearer other");
    expect(caller.get("authorization")).toEqual(["Bearer k1"]);
  });
});
