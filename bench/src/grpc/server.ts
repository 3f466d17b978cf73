#!/usr/bin/env node
/**
 * One server of the gRPC benchmark, in its own process so that it has a core of its own:
 *   bare      plain @grpc/grpc-js, GetModel answers a fixed model (the peer)
 *   kit       the kit's GrpcServer (auth, tracing, error mapping, health, reflection), same handler
 *   registry  the real RegistryService through startPlatform: GetModel reads Postgres
 *             (embedded PGlite, or LATHE_PG_URL)
 * Prints `port <n>` when ready; exits on SIGTERM.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { baseConfigSchema, createLogger, GrpcServer, loadConfig, startPlatform, unimplementedHandlers } from "@lathe/kit";
import { Model, RegistryServiceService, type GetModelRequest, type GetModelResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { createRegistryService } from "@lathe/registry";
import { benchKeyValue } from "./key.js";

const fixed: GetModelResponse = {
  model: Model.fromPartial({ name: "models/bench", displayName: "bench", sourceUri: "/models/bench", createTime: new Date(0), updateTime: new Date(0) }),
};

const kind = process.argv[2];
let stop: () => Promise<void>;
if (kind === "bare") {
  const server = new Server();
  const handlers: Record<string, unknown> = {};
  for (const key of Object.keys(RegistryServiceService)) handlers[key] = (_c: unknown, cb: sendUnaryData<unknown>) => cb({ code: 12 });
  handlers["getModel"] = (_call: ServerUnaryCall<GetModelRequest, GetModelResponse>, cb: sendUnaryData<GetModelResponse>) => cb(null, fixed);
  server.addService(RegistryServiceService, handlers as never);
  const port = await new Promise<number>((res, rej) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  stop = () => new Promise((r) => server.tryShutdown(() => r()));
  process.stdout.write(`port ${port}\n`);
} else if (kind === "kit") {
  const server = new GrpcServer({ logger: createLogger({ service: "bench", level: "silent" }), apiKeys: { [benchKeyValue]: "bench" } });
  server.add("lathe.registry.v1.RegistryService", RegistryServiceService, { ...unimplementedHandlers(RegistryServiceService, "bench"), getModel: async () => fixed });
  const port = await server.listen("127.0.0.1", 0);
  stop = () => server.shutdown(1000);
  process.stdout.write(`port ${port}\n`);
} else if (kind === "registry") {
  const dataDir = mkdtempSync(join(tmpdir(), "lathe-bench-"));
  const config = loadConfig(baseConfigSchema, { LATHE_GRPC_HOST: "127.0.0.1", LATHE_GRPC_PORT: "0", LATHE_DATA_DIR: dataDir, LATHE_PG_URL: process.env["LATHE_PG_URL"], LATHE_API_KEYS: `${benchKeyValue}=bench`, LATHE_LOG_LEVEL: "silent" });
  const platform = await startPlatform({ name: "bench", config, factories: [createRegistryService] });
  stop = () => platform.stop();
  process.stdout.write(`port ${platform.port}\n`);
} else {
  throw new Error(`usage: server.js bare|kit|registry`);
}
process.once("SIGTERM", () => void stop().then(() => process.exit(0)));
