import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, RegistryServiceClient, RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import { call, createClient, createLogger, GrpcServer, startTelemetry, unimplementedHandlers, withMetadata, type Telemetry } from "../src/index.js";

// Traces leave the process over OTLP/HTTP when an endpoint is configured. The collector is
// outside Lathe, so a small HTTP server that accepts OTLP stands in for it.

const KEY = "key-acme-0123456789";
const traceId = "0af7651916cd43dd8448eb211c80319c";

describe("telemetry", () => {
  const bodies: Buffer[] = [];
  const logLines: string[] = [];
  const collector = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces") bodies.push(Buffer.concat(chunks));
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  let telemetry: Telemetry;
  let server: GrpcServer;
  let client: RegistryServiceClient;

  beforeAll(async () => {
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r));
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    telemetry = startTelemetry({ serviceName: "lathe-telemetry-test", otlpEndpoint: endpoint });
    const logger = createLogger({ service: "telemetry-test", destination: new Writable({ write: (c: Buffer, _e, cb) => (logLines.push(c.toString()), cb()) }) });
    server = new GrpcServer({ logger, apiKeys: { [KEY]: "acme" } });
    server.add("lathe.registry.v1.RegistryService", RegistryServiceService, {
      ...unimplementedHandlers(RegistryServiceService, "test"),
      async getModel(req, ctx) {
        ctx.logger.info({ name: req.name }, "getting model");
        return { model: Model.fromPartial({ name: req.name }) };
      },
    });
    client = createClient(RegistryServiceClient, `127.0.0.1:${await server.listen("127.0.0.1", 0)}`, { apiKey: KEY });
  });
  afterAll(async () => {
    client?.close();
    await server?.shutdown(500);
    collector.close();
  });

  it("continues the caller's trace, logs its ids, and exports the span over OTLP", async () => {
    await call(client, "getModel", { name: "models/traced" }, withMetadata({ traceparent: `00-${traceId}-b7ad6b7169203331-01` }));
    const line = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l["msg"] === "getting model");
    expect(line).toMatchObject({ trace_id: traceId, service: "telemetry-test", name: "models/traced" });
    expect(line!["span_id"]).toMatch(/^[0-9a-f]{16}$/);

    await telemetry.shutdown(); // flushes the batch
    const all = Buffer.concat(bodies);
    expect(all.includes(Buffer.from("lathe.registry.v1.RegistryService/GetModel"))).toBe(true);
    expect(all.includes(Buffer.from("lathe-telemetry-test"))).toBe(true);
    expect(all.includes(Buffer.from(traceId, "hex"))).toBe(true);
  });
});
