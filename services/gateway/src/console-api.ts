import type { ServerResponse } from "node:http";
import type { Client, ClientReadableStream, Metadata, ServiceError } from "@grpc/grpc-js";
import { AppError, asAppError, createClient, errorCodeTable, fromGrpcError, type Logger } from "@lathe/kit";
import * as dataset from "@lathe/proto/lathe/dataset/v1/dataset_service";
import * as evaluator from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import * as gateway from "@lathe/proto/lathe/gateway/v1/gateway_service";
import * as registry from "@lathe/proto/lathe/registry/v1/registry_service";
import * as trainer from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { OpenAiError } from "./domain/errors.js";

type PeerName = "registry" | "dataset" | "trainer" | "evaluator" | "gateway";
type Caller = (req: FastifyRequest) => { tenant: string; md: Metadata };

/** A message type as ts-proto generates it: JSON in and out in proto3's JSON mapping. */
interface Codec<T> {
  fromJSON(object: unknown): T;
  toJSON(message: T): unknown;
}
/** A method definition as ts-proto generates it for grpc-js. */
interface MethodDef<Req, Res> {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}
type ClientCtor = new (...args: never[]) => Client;

/**
 * How a method is answered: `unary` with its JSON response; `events` as server-sent events, one
 * `data:` line per message until the stream ends (Watch…); `collect`: a finite server stream
 * answered as `{ responses: [...] }` (StreamDatasetRows with a limit).
 */
type Kind = "unary" | "events" | "collect";

interface ConsoleMethod {
  peer: PeerName;
  client: ClientCtor;
  kind: Kind;
  def: MethodDef<unknown, unknown>;
  req: Codec<unknown>;
  res: Codec<unknown>;
}

function method<Req, Res>(peer: PeerName, client: ClientCtor, def: MethodDef<Req, Res>, req: Codec<Req>, res: Codec<Res>, kind: Kind = "unary"): [string, ConsoleMethod] {
  const [service, name] = def.path.slice(1).split("/") as [string, string];
  const short = service.split(".")[1]!;
  return [`${short}/${name}`, { peer, client, kind, def: def as MethodDef<unknown, unknown>, req: req as Codec<unknown>, res: res as Codec<unknown> }];
}

const T = trainer.TrainerServiceService;
const D = dataset.DatasetServiceService;
const E = evaluator.EvaluatorServiceService;
const R = registry.RegistryServiceService;
const G = gateway.GatewayServiceService;

/**
 * The methods the console may call, by `service/Method` (`trainer/ListFineTuningJobs`): reading
 * everything it shows, and the few changes it offers (cancel a job, move or roll back an alias).
 * Uploads and creates stay with the CLI and the SDKs.
 */
export const consoleMethods: ReadonlyMap<string, ConsoleMethod> = new Map([
  method("trainer", trainer.TrainerServiceClient, T.listFineTuningJobs, trainer.ListFineTuningJobsRequest, trainer.ListFineTuningJobsResponse),
  method("trainer", trainer.TrainerServiceClient, T.getFineTuningJob, trainer.GetFineTuningJobRequest, trainer.GetFineTuningJobResponse),
  method("trainer", trainer.TrainerServiceClient, T.watchFineTuningJob, trainer.WatchFineTuningJobRequest, trainer.WatchFineTuningJobResponse, "events"),
  method("trainer", trainer.TrainerServiceClient, T.cancelFineTuningJob, trainer.CancelFineTuningJobRequest, trainer.CancelFineTuningJobResponse),
  method("trainer", trainer.TrainerServiceClient, T.listCheckpoints, trainer.ListCheckpointsRequest, trainer.ListCheckpointsResponse),
  method("trainer", trainer.TrainerServiceClient, T.getFineTuningJobMetrics, trainer.GetFineTuningJobMetricsRequest, trainer.GetFineTuningJobMetricsResponse),
  method("dataset", dataset.DatasetServiceClient, D.listDatasets, dataset.ListDatasetsRequest, dataset.ListDatasetsResponse),
  method("dataset", dataset.DatasetServiceClient, D.getDataset, dataset.GetDatasetRequest, dataset.GetDatasetResponse),
  method("dataset", dataset.DatasetServiceClient, D.listDatasetVersions, dataset.ListDatasetVersionsRequest, dataset.ListDatasetVersionsResponse),
  method("dataset", dataset.DatasetServiceClient, D.getDatasetVersion, dataset.GetDatasetVersionRequest, dataset.GetDatasetVersionResponse),
  method("dataset", dataset.DatasetServiceClient, D.getQualityReport, dataset.GetQualityReportRequest, dataset.GetQualityReportResponse),
  method("dataset", dataset.DatasetServiceClient, D.streamDatasetRows, dataset.StreamDatasetRowsRequest, dataset.StreamDatasetRowsResponse, "collect"),
  method("evaluator", evaluator.EvaluatorServiceClient, E.listEvaluationRuns, evaluator.ListEvaluationRunsRequest, evaluator.ListEvaluationRunsResponse),
  method("evaluator", evaluator.EvaluatorServiceClient, E.getEvaluationRun, evaluator.GetEvaluationRunRequest, evaluator.GetEvaluationRunResponse),
  method("evaluator", evaluator.EvaluatorServiceClient, E.watchEvaluationRun, evaluator.WatchEvaluationRunRequest, evaluator.WatchEvaluationRunResponse, "events"),
  method("evaluator", evaluator.EvaluatorServiceClient, E.compareEvaluationRuns, evaluator.CompareEvaluationRunsRequest, evaluator.CompareEvaluationRunsResponse),
  method("evaluator", evaluator.EvaluatorServiceClient, E.listEvaluationPredictions, evaluator.ListEvaluationPredictionsRequest, evaluator.ListEvaluationPredictionsResponse),
  method("registry", registry.RegistryServiceClient, R.listModels, registry.ListModelsRequest, registry.ListModelsResponse),
  method("registry", registry.RegistryServiceClient, R.getModel, registry.GetModelRequest, registry.GetModelResponse),
  method("registry", registry.RegistryServiceClient, R.listAdapters, registry.ListAdaptersRequest, registry.ListAdaptersResponse),
  method("registry", registry.RegistryServiceClient, R.getAdapter, registry.GetAdapterRequest, registry.GetAdapterResponse),
  method("registry", registry.RegistryServiceClient, R.listAdapterVersions, registry.ListAdapterVersionsRequest, registry.ListAdapterVersionsResponse),
  method("registry", registry.RegistryServiceClient, R.getAdapterVersion, registry.GetAdapterVersionRequest, registry.GetAdapterVersionResponse),
  method("registry", registry.RegistryServiceClient, R.listAliases, registry.ListAliasesRequest, registry.ListAliasesResponse),
  method("registry", registry.RegistryServiceClient, R.getAlias, registry.GetAliasRequest, registry.GetAliasResponse),
  method("registry", registry.RegistryServiceClient, R.setAlias, registry.SetAliasRequest, registry.SetAliasResponse),
  method("registry", registry.RegistryServiceClient, R.rollbackAlias, registry.RollbackAliasRequest, registry.RollbackAliasResponse),
  method("registry", registry.RegistryServiceClient, R.getPromotionRule, registry.GetPromotionRuleRequest, registry.GetPromotionRuleResponse),
  method("registry", registry.RegistryServiceClient, R.getLineage, registry.GetLineageRequest, registry.GetLineageResponse),
  method("registry", registry.RegistryServiceClient, R.getModelCard, registry.GetModelCardRequest, registry.GetModelCardResponse),
  method("gateway", gateway.GatewayServiceClient, G.listDeployments, gateway.ListDeploymentsRequest, gateway.ListDeploymentsResponse),
  method("gateway", gateway.GatewayServiceClient, G.getDeployment, gateway.GetDeploymentRequest, gateway.GetDeploymentResponse),
]);

/** The console's error body: the canonical code, the machine-readable reason, the message and the field. */
export interface ConsoleErrorBody {
  error: { code: string; reason: string; message: string; field: string | null };
}

function errorOf(err: unknown): { status: number; body: ConsoleErrorBody } {
  if (err instanceof OpenAiError) return { status: err.status, body: { error: { code: err.status === 401 ? "UNAUTHENTICATED" : "INVALID_ARGUMENT", reason: (err.code ?? "invalid_request").toUpperCase(), message: err.message, field: err.param } } };
  const statusCode = (err as { statusCode?: unknown }).statusCode;
  if (!(err instanceof AppError) && typeof statusCode === "number" && statusCode >= 400 && statusCode < 500) {
    // fastify's own: a body that is not JSON, too large, a wrong content type.
    return { status: statusCode, body: { error: { code: "INVALID_ARGUMENT", reason: "BAD_REQUEST", message: (err as Error).message, field: null } } };
  }
  const app = asAppError(err);
  return { status: errorCodeTable[app.code].http, body: { error: { code: app.code, reason: app.reason, message: app.message, field: app.field ?? null } } };
}

export interface ConsoleApiDeps {
  /** The address of a service's gRPC server (the kit's `peerAddress`). */
  peerAddress(service: PeerName): string;
  logger: Logger;
}

/**
 * The console's HTTP/JSON facade over the services' gRPC APIs, each call made with the caller's
 * API key (so its tenant and rights hold as they do for gRPC):
 *
 * - `GET /console/api/session`: the tenant of the key, or 401 (the login screen's check).
 * - `POST /console/api/{service}/{Method}` with the request as proto3 JSON: the response as proto3
 *   JSON; Watch methods answer with server-sent events (`data:` per message, `event: end`,
 *   `event: error`), read by the console with fetch (so the key stays in a header, never in a URL).
 *
 * Errors are `{ error: { code, reason, message, field } }` with the code's HTTP status.
 */
export async function registerConsoleApi(app: FastifyInstance, deps: ConsoleApiDeps, caller: Caller): Promise<void> {
  const clients = new Map<string, { address: string; client: Client }>();
  const clientOf = (m: ConsoleMethod): Client => {
    const address = deps.peerAddress(m.peer);
    const kept = clients.get(m.peer);
    if (kept?.address === address) return kept.client;
    kept?.client.close();
    const client = createClient(m.client as never, address, { deadlineMs: 30_000 }) as Client;
    clients.set(m.peer, { address, client });
    return client;
  };
  app.addHook("onClose", async () => {
    for (const { client } of clients.values()) client.close();
    clients.clear();
  });

  await app.register(async (scope) => {
    scope.setErrorHandler((err, _req, reply) => {
      const { status, body } = errorOf(err);
      if (status >= 500) deps.logger.error({ err }, "console request failed");
      return reply.code(status).send(body);
    });
    scope.setNotFoundHandler((req, reply) =>
      reply.code(404).send({ error: { code: "NOT_FOUND", reason: "UNKNOWN_URL", message: `Unknown console API URL: ${req.method} ${req.url}. Calls are POST /console/api/{service}/{Method}.`, field: null } } satisfies ConsoleErrorBody),
    );
    // A POST without a body is an empty request.
    scope.removeContentTypeParser("application/json");
    scope.addContentTypeParser("application/json", { parseAs: "string", bodyLimit: 1 << 20 }, (_req, body, done) => {
      const text = String(body);
      if (text.trim() === "") return done(null, {});
      try {
        done(null, JSON.parse(text));
      } catch (err) {
        done(new AppError("INVALID_ARGUMENT", "INVALID_JSON", `the body is not valid JSON: ${(err as Error).message}`), undefined);
      }
    });

    scope.get("/session", async (req) => ({ tenant: caller(req).tenant }));

    scope.post<{ Params: { service: string; method: string } }>("/:service/:method", async (req, reply) => {
      const { md } = caller(req);
      const key = `${req.params.service}/${req.params.method}`;
      const m = consoleMethods.get(key);
      if (m === undefined) {
        throw new AppError("NOT_FOUND", "UNKNOWN_METHOD", `the console API has no method ${key}; it has ${[...consoleMethods.keys()].join(", ")}`, { field: "method" });
      }
      const body = req.body ?? {};
      if (typeof body !== "object" || Array.isArray(body)) throw new AppError("INVALID_ARGUMENT", "INVALID_REQUEST", `the body of ${key} must be a JSON object (the request message in proto3 JSON)`);
      const request = m.req.fromJSON(body);
      const client = clientOf(m);
      if (m.kind === "unary") {
        const res = await new Promise<unknown>((resolve, reject) => {
          client.makeUnaryRequest(m.def.path, m.def.requestSerialize, m.def.responseDeserialize, request, md, {}, (err: ServiceError | null, value?: unknown) =>
            err ? reject(fromGrpcError(err)) : resolve(value),
          );
        });
        return m.res.toJSON(res);
      }
      if (m.kind === "collect") {
        const responses: unknown[] = [];
        const stream = client.makeServerStreamRequest(m.def.path, m.def.requestSerialize, m.def.responseDeserialize, request, md, {});
        await new Promise<void>((resolve, reject) => {
          stream.on("data", (msg: unknown) => responses.push(m.res.toJSON(msg)));
          stream.on("error", (err: ServiceError) => reject(fromGrpcError(err)));
          stream.on("end", () => resolve());
        });
        return { responses };
      }
      // A watch follows its resource for as long as the page is open: no deadline, no idle limit.
      const stream = client.makeServerStreamRequest(m.def.path, m.def.requestSerialize, m.def.responseDeserialize, request, md, { deadline: Infinity });
      await sendEvents(stream, reply.raw, (msg) => m.res.toJSON(msg), () => reply.hijack());
      return reply;
    });
  }, { prefix: "/console/api" });
}

/**
 * Relays a server stream as server-sent events. The first message decides: an error before it
 * (NOT_FOUND, UNAUTHENTICATED) is thrown, so it is answered with its HTTP status like any call;
 * after it, an error is sent as `event: error`. A comment every 15 s keeps proxies from closing
 * a quiet stream; the gRPC call is cancelled when the page goes away.
 */
async function sendEvents(stream: ClientReadableStream<unknown>, res: ServerResponse, toJSON: (msg: unknown) => unknown, hijack: () => void): Promise<void> {
  let started = false;
  let heartbeat: NodeJS.Timeout | undefined;
  const write = (text: string) => {
    if (!res.destroyed) res.write(text);
  };
  const start = () => {
    if (started) return;
    started = true;
    hijack();
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    heartbeat = setInterval(() => write(": keep-alive\n\n"), 15_000);
    heartbeat.unref();
  };
  res.on("close", () => stream.cancel());
  try {
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (msg: unknown) => {
        start();
        write(`data: ${JSON.stringify(toJSON(msg))}\n\n`);
      });
      stream.on("error", (err: ServiceError) => reject(fromGrpcError(err)));
      stream.on("end", () => resolve());
    });
    start();
    write("event: end\ndata: {}\n\n");
  } catch (err) {
    if (!started) throw err;
    write(`event: error\ndata: ${JSON.stringify(errorOf(err).body)}\n\n`);
  } finally {
    clearInterval(heartbeat);
  }
  if (!res.destroyed) res.end();
}
