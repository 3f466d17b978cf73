import { setMaxListeners } from "node:events";
import { readFileSync } from "node:fs";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { descriptorSetPath } from "@lathe/proto";
import { ApiKeyAuth } from "./auth.js";
import { wrapHandlers, type ServiceDef, type ServiceHandlers } from "./handlers.js";

export interface GrpcServerOptions {
  logger: Logger;
  /** API key → tenant. */
  apiKeys: Readonly<Record<string, string>>;
  /** Largest message accepted, in bytes. Default 16 MiB (uploads stream in chunks below it). */
  maxMessageBytes?: number;
}

/**
 * A gRPC server with what every Lathe service needs: the standard health service
 * (`grpc.health.v1.Health`, one status per service plus the overall ""), server reflection
 * over the API's descriptor set, the kit's handler wrapper (auth, tracing, error mapping), and
 * a graceful drain for SIGTERM. Health and reflection need no API key, so probes and grpcurl
 * work without one.
 */
export class GrpcServer {
  private readonly server: Server;
  private readonly health = new HealthImplementation({ "": "NOT_SERVING" });
  private readonly auth: ApiKeyAuth;
  private readonly serviceNames: string[] = [];
  private readonly draining = new AbortController();
  private port: number | undefined;

  constructor(private readonly opts: GrpcServerOptions) {
    const max = opts.maxMessageBytes ?? 16 * 1024 * 1024;
    this.server = new Server({ "grpc.max_receive_message_length": max, "grpc.max_send_message_length": max });
    this.auth = new ApiKeyAuth(opts.apiKeys);
    // Every call in flight listens for the drain; there may be thousands.
    setMaxListeners(0, this.draining.signal);
    this.health.addToServer(this.server);
  }

  /** Adds a service; `fullName` is its proto name, e.g. `lathe.registry.v1.RegistryService`. */
  add<S extends ServiceDef>(fullName: string, def: S, handlers: ServiceHandlers<S>): this {
    this.server.addService(def, wrapHandlers(def, handlers, { auth: this.auth, logger: this.opts.logger, shutdown: this.draining.signal }));
    this.serviceNames.push(fullName);
    this.health.setStatus(fullName, "NOT_SERVING");
    return this;
  }

  /** Binds, registers reflection for the added services, and reports SERVING. Returns the port. */
  async listen(host: string, port: number): Promise<number> {
    const pkg = loadFileDescriptorSetFromBuffer(readFileSync(descriptorSetPath), {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    new ReflectionService(pkg, { services: this.serviceNames }).addToServer(this.server);
    this.port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
    });
    for (const name of [...this.serviceNames, ""]) this.health.setStatus(name, "SERVING");
    this.opts.logger.info({ host, port: this.port, services: this.serviceNames }, "grpc server listening");
    return this.port;
  }

  /**
   * Drains: reports NOT_SERVING (so load balancers stop sending), ends open streams, waits up to
   * `graceMs` for calls in flight, then cancels what is left.
   */
  async shutdown(graceMs: number): Promise<void> {
    for (const name of [...this.serviceNames, ""]) this.health.setStatus(name, "NOT_SERVING");
    this.draining.abort();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.opts.logger.warn({ graceMs }, "grpc drain timed out; cancelling calls in flight");
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
