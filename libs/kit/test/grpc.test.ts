import { connectivityState, credentials, loadPackageDefinition, Metadata, status, type Client, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  Model,
  RegistryServiceClient,
  RegistryServiceService,
  type GetModelRequest,
  type GetModelResponse,
} from "@lathe/proto/lathe/registry/v1/registry_service";
import {
  AppError,
  createClient,
  createLogger,
  errorTrailers,
  GrpcServer,
  invalidArgument,
  unary,
  unimplementedHandlers,
  type CallContext,
  type ClientFactoryOptions,
  type ServiceHandlers,
} from "../src/index.js";
import { freePort, waitFor } from "../../testing/src/index.js";

// GrpcServer and createClient over real sockets: health, auth, error mapping, drain and retries.

const SERVICE = "lathe.registry.v1.RegistryService";
const KEY = "key-acme-0123456789";
const logger = createLogger({ service: "kit-test", level: "silent" });

const model = (name: string) => Model.fromPartial({ name });

/** The raw grpc.health.v1 client, as a load balancer or Kubernetes probe would use it. */
type HealthClient = Client & {
  check(req: { service: string }, cb: (err: ServiceError | null, res?: { status: string }) => void): void;
  watch(req: { service: string }): NodeJS.ReadableStream & { cancel(): void };
};
const healthProto = loadPackageDefinition(loadSync(healthProtoPath, { keepCase: true, enums: String, defaults: true })) as unknown as {
  grpc: { health: { v1: { Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => HealthClient } } };
};
const healthClient = (address: string) => new healthProto.grpc.health.v1.Health(address, credentials.createInsecure());
const check = (c: HealthClient, service: string) =>
  new Promise<string>((resolve, reject) => c.check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));

/** A raw unary call, to see the status and trailers a non-kit client gets. */
const raw = (client: RegistryServiceClient, req: GetModelRequest, md = new Metadata()) =>
  new Promise<ServiceError>((resolve, reject) =>
    client.getModel(req, md, (err: ServiceError | null) => (err ? resolve(err) : reject(new Error("the call succeeded")))),
  );

/** The AppError a failed call of the kit's `unary` rejects with. */
async function failure(call: Promise<unknown>): Promise<AppError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

type Handlers = ServiceHandlers<typeof RegistryServiceService>;

interface Started {
  server: GrpcServer;
  address: string;
  client(opts?: ClientFactoryOptions): RegistryServiceClient;
  stop(): Promise<void>;
}

const opened: Started[] = [];
async function start(getModel: Handlers["getModel"], port = 0): Promise<Started> {
  const server = new GrpcServer({ logger, apiKeys: { [KEY]: "acme" } });
  server.add(SERVICE, RegistryServiceService, { ...unimplementedHandlers(RegistryServiceService, "issue #7 (models slice)"), getModel });
  const bound = await server.listen("127.0.0.1", port);
  const address = `127.0.0.1:${bound}`;
  const clients: Client[] = [];
  let stopping: Promise<void> | undefined;
  const started: Started = {
    server,
    address,
    client(opts = {}) {
      const c = createClient(RegistryServiceClient, address, { apiKey: KEY, ...opts });
      clients.push(c);
      return c;
    },
    stop: () =>
      (stopping ??= (async () => {
        for (const c of clients) c.close();
        await server.shutdown(1_000);
      })()),
  };
  opened.push(started);
  return started;
}
afterAll(async () => {
  await Promise.all(opened.map((s) => s.stop()));
});

describe("GrpcServer", () => {
  let s: Started;
  const tenants: string[] = [];
  beforeAll(async () => {
    s = await start(async (req: GetModelRequest, ctx: CallContext): Promise<GetModelResponse> => {
      tenants.push(ctx.tenant);
      switch (req.name) {
        case "models/app-error":
          throw invalidArgument("name", "must look like models/{model_id}", "MODEL_NAME_INVALID");
        case "models/crash":
          throw new Error("connect ECONNREFUSED db.internal:5432 password=hunter2");
        case "models/non-ascii-field":
          throw invalidArgument("model.labels.ключ", "label keys are lowercase ASCII letters");
        default:
          return { model: model(req.name) };
      }
    });
  });

  it("reports SERVING for the server and for each service once listening", async () => {
    const health = healthClient(s.address);
    try {
      expect(await check(health, "")).toBe("SERVING");
      expect(await check(health, SERVICE)).toBe("SERVING");
      await expect(check(health, "lathe.nothing.v1.NoService")).rejects.toMatchObject({ code: status.NOT_FOUND });
    } finally {
      health.close();
    }
  });

  it("answers a call with a known key and gives the handler its tenant", async () => {
    const client = s.client();
    const res = await unary<GetModelResponse>((cb) => client.getModel({ name: "models/ok" }, cb));
    expect(res.model?.name).toBe("models/ok");
    expect(tenants.at(-1)).toBe("acme");

    const viaHeader = createClient(RegistryServiceClient, s.address);
    try {
      const md = new Metadata();
      md.set("x-api-key", KEY);
      const r = await unary<GetModelResponse>((cb) => viaHeader.getModel({ name: "models/ok2" }, md, cb));
      expect(r.model?.name).toBe("models/ok2");
    } finally {
      viaHeader.close();
    }
  });

  it("refuses a call without a key, or with an unknown one, as UNAUTHENTICATED", async () => {
    const before = tenants.length;
    const anonymous = s.client({ apiKey: undefined });
    const missing = await failure(unary((cb) => anonymous.getModel({ name: "models/ok" }, cb)));
    expect([missing.code, missing.reason]).toEqual(["UNAUTHENTICATED", "API_KEY_MISSING"]);

    const wrong = s.client({ apiKey: "not-a-key" });
    const invalid = await failure(unary((cb) => wrong.getModel({ name: "models/ok" }, cb)));
    expect([invalid.code, invalid.reason]).toEqual(["UNAUTHENTICATED", "API_KEY_INVALID"]);
    expect(tenants.length).toBe(before);
  });

  it("sends an AppError thrown by a handler as its status, message and reason trailers", async () => {
    const client = s.client();
    const err = await raw(client, { name: "models/app-error" });
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toBe("name: must look like models/{model_id}");
    expect(err.metadata.get(errorTrailers.reason)).toEqual(["MODEL_NAME_INVALID"]);
    expect(err.metadata.get(errorTrailers.field)).toEqual(["name"]);

    const app = await failure(unary((cb) => client.getModel({ name: "models/app-error" }, cb)));
    expect([app.code, app.reason, app.field, app.message]).toEqual([
      "INVALID_ARGUMENT",
      "MODEL_NAME_INVALID",
      "name",
      "name: must look like models/{model_id}",
    ]);
  });

  it("sends an AppError about a non-ASCII field as its status", async () => {
    const client = s.client({ deadlineMs: 3_000 });
    const app = await failure(unary((cb) => client.getModel({ name: "models/non-ascii-field" }, cb)));
    expect([app.code, app.field]).toEqual(["INVALID_ARGUMENT", "model.labels.ключ"]);
  });

  it("sends a plain Error as INTERNAL 'internal error', hiding its text", async () => {
    const err = await raw(s.client(), { name: "models/crash" });
    expect(err.code).toBe(status.INTERNAL);
    expect(err.details).toBe("internal error");
    expect(JSON.stringify(err.metadata.getMap())).not.toContain("hunter2");
  });

  it("answers UNIMPLEMENTED for unimplemented methods, naming the method and the issue", async () => {
    const client = s.client();
    const app = await failure(unary((cb) => client.deleteModel({ name: "models/x" }, cb)));
    expect([app.code, app.reason]).toEqual(["UNIMPLEMENTED", "NOT_IMPLEMENTED_YET"]);
    expect(app.message).toBe(`${SERVICE}.DeleteModel is not implemented yet: issue #7 (models slice)`);
  });
});

describe("GrpcServer.shutdown", () => {
  it("reports NOT_SERVING as soon as the drain starts", async () => {
    const s = await start(async (req) => ({ model: model(req.name) }));
    const health = healthClient(s.address);
    const statuses: string[] = [];
    const watch = health.watch({ service: "" });
    watch.on("data", (r: { status: string }) => statuses.push(r.status));
    watch.on("error", () => {}); // cancelled below
    await waitFor(() => statuses.length >= 1, { what: "the first health status" });
    const serviceWatch = health.watch({ service: SERVICE });
    const serviceStatuses: string[] = [];
    serviceWatch.on("data", (r: { status: string }) => serviceStatuses.push(r.status));
    serviceWatch.on("error", () => {});
    await waitFor(() => serviceStatuses.length >= 1, { what: "the service's first health status" });

    const stopped = s.stop();
    await waitFor(() => statuses.length >= 2 && serviceStatuses.length >= 2, { what: "the status change" });
    watch.cancel();
    serviceWatch.cancel();
    health.close();
    await stopped;
    expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);
    expect(serviceStatuses).toEqual(["SERVING", "NOT_SERVING"]);
  });

  it("lets a call in flight finish within the grace period, and aborts its signal", async () => {
    let entered = false;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let abortedAtEnd: boolean | undefined;
    const s = await start(async (req, ctx) => {
      entered = true;
      await gate;
      abortedAtEnd = ctx.signal.aborted;
      return { model: model(req.name) };
    });
    const client = s.client({ initialBackoffMs: 10 });
    const call = unary<GetModelResponse>((cb) => client.getModel({ name: "models/slow" }, cb));
    await waitFor(() => entered, { what: "the handler to start" });

    const drained = s.server.shutdown(30_000);
    release();
    expect((await call).model?.name).toBe("models/slow");
    await drained;
    expect(abortedAtEnd).toBe(true);

    const after = await failure(unary((cb) => client.getModel({ name: "models/late" }, cb)));
    expect(after.code).toBe("UNAVAILABLE");
  });
});

describe("createClient", () => {
  // Reconnects quickly, so a retry finds the server soon after it starts; the kit's options are kept.
  class QuickReconnectClient extends RegistryServiceClient {
    constructor(address: string, creds: ReturnType<typeof credentials.createInsecure>, options: object = {}) {
      super(address, creds, { ...options, "grpc.initial_reconnect_backoff_ms": 50, "grpc.max_reconnect_backoff_ms": 50 });
    }
  }
  const clients: Client[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  it("retries UNAVAILABLE: a call made before the server listens succeeds once it does", async () => {
    const port = await freePort();
    const client = createClient(QuickReconnectClient, `127.0.0.1:${port}`, { apiKey: KEY, maxAttempts: 5, initialBackoffMs: 1_000 });
    clients.push(client);
    let invocations = 0;
    const call = unary<GetModelResponse>((cb) => client.getModel({ name: "models/early" }, cb));
    // The first attempt fails once the channel knows nothing listens there.
    await waitFor(() => client.getChannel().getConnectivityState(false) === connectivityState.TRANSIENT_FAILURE, {
      what: "the first connection attempt to fail",
    });
    await start(async (req) => {
      invocations++;
      return { model: model(req.name) };
    }, port);
    expect((await call).model?.name).toBe("models/early");
    expect(invocations).toBe(1);
  });

  it("makes a single attempt when asked for maxAttempts 1", async () => {
    const port = await freePort();
    const client = createClient(RegistryServiceClient, `127.0.0.1:${port}`, { apiKey: KEY, maxAttempts: 1 });
    clients.push(client);
    const err = await failure(unary((cb) => client.getModel({ name: "models/x" }, cb)));
    expect(err.code).toBe("UNAVAILABLE");
  });

  it.each([
    ["INVALID_ARGUMENT", () => invalidArgument("name", "bad")],
    ["FAILED_PRECONDITION", () => new AppError("FAILED_PRECONDITION", "NOT_READY", "not ready")],
    ["INTERNAL", () => new Error("boom")],
  ])("does not retry %s", async (code, fail) => {
    let invocations = 0;
    const s = await start(async () => {
      invocations++;
      throw fail();
    });
    const client = s.client({ maxAttempts: 5, initialBackoffMs: 10 });
    const err = await failure(unary((cb) => client.getModel({ name: "models/x" }, cb)));
    expect(err.code).toBe(code);
    expect(invocations).toBe(1);
    await s.stop();
  });
});
