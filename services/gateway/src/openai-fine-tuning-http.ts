import type { Metadata } from "@grpc/grpc-js";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { badRequest } from "./domain/errors.js";
import { boundaryOf, parseMultipart } from "./domain/multipart.js";
import type { OpenAiFineTuning } from "./domain/openai-fine-tuning.js";

type Caller = (req: FastifyRequest) => { tenant: string; md: Metadata };
type Query = Record<string, unknown>;
type Id = { Params: { id: string }; Querystring: Query };

/**
 * OpenAI's files and fine-tuning jobs API (docs/openai-fine-tuning.md): `/v1/files` and
 * `/v1/fine_tuning/jobs`, each as the caller's tenant. In a scope of their own, so that the
 * multipart uploads and empty JSON bodies they take change no other route.
 */
export async function registerFineTuningRoutes(app: FastifyInstance, ft: OpenAiFineTuning, caller: Caller, filesMaxBytes: number): Promise<void> {
  await app.register(async (scope) => {
    scope.addContentTypeParser("multipart/form-data", { parseAs: "buffer", bodyLimit: filesMaxBytes }, (_req, body, done) => done(null, body));
    // A POST without a body (cancel) may still say it is JSON.
    scope.removeContentTypeParser("application/json");
    scope.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
      const text = String(body);
      if (text.trim() === "") return done(null, undefined);
      try {
        done(null, JSON.parse(text));
      } catch (err) {
        done(badRequest(`The body is not valid JSON: ${(err as Error).message}`, null, "invalid_json"), undefined);
      }
    });

    scope.post("/v1/files", { bodyLimit: filesMaxBytes }, async (req) => {
      const { tenant, md } = caller(req);
      const body = req.body;
      if (!Buffer.isBuffer(body)) throw badRequest("Upload a file as multipart/form-data with the fields 'file' and 'purpose'.", null, "invalid_content_type");
      const parts = parseMultipart(body, boundaryOf(req.headers["content-type"]));
      const purpose = parts.find((p) => p.name === "purpose" && p.filename === undefined)?.data.toString("utf8").trim();
      const file = parts.find((p) => p.name === "file");
      return ft.uploadFile(tenant, md, purpose, file === undefined ? undefined : { filename: file.filename ?? "file", data: file.data });
    });
    scope.get<{ Querystring: Query }>("/v1/files", async (req) => ft.listFiles(caller(req).tenant, req.query));
    scope.get<Id>("/v1/files/:id", async (req) => {
      const { tenant, md } = caller(req);
      return ft.getFile(tenant, md, req.params.id);
    });
    scope.delete<Id>("/v1/files/:id", async (req) => {
      const { tenant, md } = caller(req);
      return ft.deleteFile(tenant, md, req.params.id);
    });
    scope.get<Id>("/v1/files/:id/content", async (req, reply) => {
      const { content, filename } = await ft.fileContent(caller(req).tenant, req.params.id);
      return reply.header("content-type", "application/octet-stream").header("content-disposition", `attachment; filename="${filename.replace(/["\\\r\n]/g, "_")}"`).send(content);
    });

    scope.post("/v1/fine_tuning/jobs", async (req) => {
      const { tenant, md } = caller(req);
      return ft.createJob(tenant, md, req.body);
    });
    scope.get<{ Querystring: Query }>("/v1/fine_tuning/jobs", async (req) => {
      const { tenant, md } = caller(req);
      return ft.listJobs(tenant, md, req.query);
    });
    scope.get<Id>("/v1/fine_tuning/jobs/:id", async (req) => {
      const { tenant, md } = caller(req);
      return ft.getJob(tenant, md, req.params.id);
    });
    scope.post<Id>("/v1/fine_tuning/jobs/:id/cancel", async (req) => {
      const { tenant, md } = caller(req);
      return ft.cancelJob(tenant, md, req.params.id);
    });
    scope.get<Id>("/v1/fine_tuning/jobs/:id/events", async (req) => ft.listEvents(caller(req).tenant, req.params.id, req.query));
    scope.get<Id>("/v1/fine_tuning/jobs/:id/checkpoints", async (req) => {
      const { tenant, md } = caller(req);
      return ft.listCheckpoints(tenant, md, req.params.id, req.query);
    });
  });
}
