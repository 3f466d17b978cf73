import { randomBytes, randomInt } from "node:crypto";
import type { Readable } from "node:stream";
import type { Metadata } from "@grpc/grpc-js";
import { AppError, call, createClient, fromGrpcError, type ArtifactStore, type EventConsumer, type EventDef } from "@lathe/kit";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import { Dataset, DatasetServiceClient, DatasetVersion_State, Severity, UploadDatasetVersionHeader, type DatasetVersion } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { FineTuningJob, FineTuningJob_State, TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { Readiness } from "@lathe/proto/lathe/type/v1/data_check";
import { sql, type Kysely, type Selectable, type Transaction } from "kysely";
import type { GatewayTables, OpenAiFilesTable, OpenAiJobsTable } from "../db/migrations.js";
import { OpenAiError, badRequest, toOpenAiError } from "./errors.js";
import { BASE_LEARNING_RATE, openAiParamOf, parseFineTuningJobCreate, trainingArgumentsOf } from "./openai-ft-request.js";
import { trainerEvents } from "../events.js";

/*
 * OpenAI's files and fine-tuning jobs API over Lathe's services, as the caller's tenant
 * (docs/openai-fine-tuning.md). A `fine-tune` file is a dataset version made by the dataset
 * service with its checks; a job is a trainer job of the same id whose follow-up registers the
 * adapter; `fine_tuned_model` resolves to that registered version. Events and results files,
 * which have no home in those services, are kept in the gateway's schema from the trainer's events.
 */

type FileRow = Selectable<OpenAiFilesTable>;
type JobRow = Selectable<OpenAiJobsTable>;

export interface OpenAiFineTuningOptions {
  db: Kysely<GatewayTables>;
  schema: string;
  artifacts: ArtifactStore;
  dataset: () => string;
  trainer: () => string;
  /** How long `POST /v1/files` waits for the dataset checks before answering `uploaded`. */
  checkWaitMs: number;
}

const fileNotFound = (id: string, param = "file_id") => new OpenAiError(404, "invalid_request_error", `No such File object: ${id}`, "file_not_found", param);
const jobNotFound = (id: string) => new OpenAiError(404, "invalid_request_error", `Could not find fine tune: ${id}`, "fine_tune_not_found", "fine_tuning_job_id");
const seconds = (d: Date | undefined | null) => (d ? Math.floor(d.getTime() / 1000) : null);
const isNotFound = (err: unknown) => err instanceof AppError && err.code === "NOT_FOUND";

/** `ft:BASE:TENANT:SUFFIX:ID`, as OpenAI writes a fine-tuned model (its organization is the tenant). */
export function fineTunedModelName(base: string, tenant: string, suffix: string | null, jobId: string): string {
  return `ft:${base}:${tenant}:${suffix ?? ""}:${jobId.replace(/^ftjob-/, "")}`;
}

/** OpenAI's status of a job: the trainer's state, and succeeded only once the adapter is registered (servable). */
export function openAiStatus(row: Pick<JobRow, "trainer_created" | "adapter_version">, state: FineTuningJob_State | undefined): string {
  if (!row.trainer_created || state === undefined) return "validating_files";
  switch (state) {
    case FineTuningJob_State.STATE_QUEUED:
      return "queued";
    case FineTuningJob_State.STATE_SUCCEEDED:
      return row.adapter_version ? "succeeded" : "running";
    case FineTuningJob_State.STATE_FAILED:
      return "failed";
    case FineTuningJob_State.STATE_CANCELLED:
      return "cancelled";
    default:
      return "running";
  }
}

/** A page of a list, as OpenAI's cursor pages: newest first, `after` an id of the previous page. */
function limitOf(q: Record<string, unknown>, def: number, max: number): number {
  const raw = q["limit"];
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw badRequest(`Invalid 'limit': ${JSON.stringify(raw)}. Expected an integer from 1 to ${max}.`, "limit", "invalid_value");
  return n;
}

const listOf = <T extends { id: string }>(items: T[], hasMore: boolean) => ({ object: "list", data: items, has_more: hasMore, first_id: items[0]?.id ?? null, last_id: items.at(-1)?.id ?? null });

/** A client of a peer service, kept open and remade when its address changes. */
class Peer<C extends { close(): void }> {
  private held: { address: string; client: C } | undefined;
  constructor(
    private readonly make: (address: string) => C,
    private readonly address: () => string,
  ) {}
  get(): C {
    const address = this.address();
    if (this.held?.address !== address) {
      this.held?.client.close();
      this.held = { address, client: this.make(address) };
    }
    return this.held.client;
  }
  close(): void {
    this.held?.client.close();
    this.held = undefined;
  }
}

export class OpenAiFineTuning {
  private readonly dataset: Peer<DatasetServiceClient>;
  private readonly trainer: Peer<TrainerServiceClient>;

  constructor(private readonly o: OpenAiFineTuningOptions) {
    this.dataset = new Peer((a) => createClient(DatasetServiceClient, a, { deadlineMs: 60_000 }), o.dataset);
    this.trainer = new Peer((a) => createClient(TrainerServiceClient, a, { deadlineMs: 120_000 }), o.trainer);
  }

  close(): void {
    this.dataset.close();
    this.trainer.close();
  }

  private get db() {
    return this.o.db.withSchema(this.o.schema);
  }

  // ---- files ----

  private fileObject(r: FileRow) {
    return { id: r.file_id, object: "file", bytes: Number(r.bytes), created_at: seconds(r.create_time), filename: r.filename, purpose: r.purpose, status: r.status, status_details: r.status_details, expires_at: null };
  }

  /** Why a checked version cannot be trained on (its blocking findings, lines named), or undefined when it can. */
  private async refusalOf(md: Metadata, v: DatasetVersion): Promise<string | undefined> {
    if (v.readiness !== Readiness.READINESS_NOT_READY) return undefined;
    const { qualityReport } = await call(this.dataset.get(), "getQualityReport", { name: v.name }, md);
    const reasons = (qualityReport?.readinessReasons ?? []).filter((r) => r.severity === Severity.SEVERITY_BLOCKING).map((r) => r.message);
    return reasons.length > 0 ? reasons.join("; ") : "its checks found it not ready for training";
  }

  /** The dataset version's checks, waited for up to `waitMs`. */
  private async checked(md: Metadata, name: string, waitMs: number): Promise<DatasetVersion> {
    const until = Date.now() + waitMs;
    for (;;) {
      const { datasetVersion: v } = await call(this.dataset.get(), "getDatasetVersion", { name }, md);
      if (!v) throw new AppError("INTERNAL", "DATASET_VERSION_MISSING", `${name} is gone`);
      if (v.state !== DatasetVersion_State.STATE_VALIDATING || Date.now() >= until) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** `POST /v1/files`: a `fine-tune` JSONL file becomes a dataset version; one its checks refuse is a 400 naming the lines. */
  async uploadFile(tenant: string, md: Metadata, purpose: string | undefined, file: { filename: string; data: Buffer } | undefined) {
    if (purpose === undefined) throw badRequest("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter");
    if (file === undefined) throw badRequest("Missing required parameter: 'file'.", "file", "missing_required_parameter");
    if (purpose !== "fine-tune") throw badRequest(`Lathe accepts files for purpose 'fine-tune' only, not '${purpose}'.`, "purpose", "unsupported_purpose");
    if (!file.filename.toLowerCase().endsWith(".jsonl")) throw badRequest(`Invalid file format for Fine-Tuning API. Must be .jsonl (got '${file.filename}').`, "file", "invalid_file_format");
    if (file.data.length === 0) throw badRequest(`The file '${file.filename}' is empty.`, "file", "invalid_file_format");

    const id = `file-${randomBytes(12).toString("hex")}`;
    const dataset = `datasets/${id}`;
    const client = this.dataset.get();
    const content = await this.o.artifacts.put(file.data);
    await call(client, "createDataset", { datasetId: id, dataset: Dataset.fromPartial({ displayName: file.filename.slice(0, 200), labels: { source: "openai-files" } }), requestId: "" }, md);
    const remove = () => call(client, "deleteDataset", { name: dataset, force: true }, md).catch(() => undefined);
    try {
      const uploaded = await new Promise<DatasetVersion>((resolve, reject) => {
        const stream = client.uploadDatasetVersion(md, (err, res) => (err ? reject(fromGrpcError(err)) : resolve(res.datasetVersion!)));
        stream.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: dataset, versionId: "v1", displayName: file.filename.slice(0, 200), contentLength: file.data.length }) });
        for (let at = 0; at < file.data.length; at += 1 << 20) stream.write({ chunk: file.data.subarray(at, at + (1 << 20)) });
        stream.end();
      });
      const v = await this.checked(md, uploaded.name, this.o.checkWaitMs);
      const refusal = await this.refusalOf(md, v);
      if (refusal !== undefined) throw badRequest(`The file '${file.filename}' cannot be used for fine-tuning: ${refusal}.`, "file", "invalid_file_format");
      const status = v.state === DatasetVersion_State.STATE_VALIDATED ? "processed" : v.state === DatasetVersion_State.STATE_VALIDATING ? "uploaded" : "error";
      const row = await this.db
        .insertInto("openai_files")
        .values({ tenant, file_id: id, purpose, filename: file.filename, bytes: file.data.length, content_digest: content.digest, dataset_version: v.name, fine_tuning_job: null, status, status_details: status === "error" ? (v.error?.message ?? "the checks could not run") : null })
        .returningAll()
        .executeTakeFirstOrThrow();
      return this.fileObject(row);
    } catch (err) {
      await remove();
      throw err;
    }
  }

  private async fileRow(tenant: string, id: string): Promise<FileRow> {
    const row = await this.db.selectFrom("openai_files").selectAll().where("tenant", "=", tenant).where("file_id", "=", id).executeTakeFirst();
    if (!row) throw fileNotFound(id);
    return row;
  }

  /** A file still being checked when it was uploaded: its status now (`processed`, or `error` with the lines named). */
  private async refreshed(md: Metadata, row: FileRow): Promise<FileRow> {
    if (row.status !== "uploaded" || row.dataset_version === null) return row;
    const v = await this.checked(md, row.dataset_version, 0);
    if (v.state === DatasetVersion_State.STATE_VALIDATING) return row;
    const refusal = v.state === DatasetVersion_State.STATE_FAILED ? (v.error?.message ?? "the checks could not run") : await this.refusalOf(md, v);
    return this.db
      .updateTable("openai_files")
      .set({ status: refusal === undefined ? "processed" : "error", status_details: refusal ?? null })
      .where("tenant", "=", row.tenant)
      .where("file_id", "=", row.file_id)
      .returningAll()
      .executeTakeFirstOrThrow();
  }

  async getFile(tenant: string, md: Metadata, id: string) {
    return this.fileObject(await this.refreshed(md, await this.fileRow(tenant, id)));
  }

  async listFiles(tenant: string, q: Record<string, unknown>) {
    const limit = limitOf(q, 10_000, 10_000);
    const order = q["order"] ?? "desc";
    if (order !== "asc" && order !== "desc") throw badRequest(`Invalid 'order': ${JSON.stringify(order)}. Expected 'asc' or 'desc'.`, "order", "invalid_value");
    let query = this.db.selectFrom("openai_files").selectAll().where("tenant", "=", tenant);
    if (typeof q["purpose"] === "string") query = query.where("purpose", "=", q["purpose"]);
    if (typeof q["after"] === "string") {
      const after = await this.fileRow(tenant, q["after"]).catch(() => {
        throw badRequest(`Invalid 'after': no file ${q["after"]}.`, "after", "invalid_value");
      });
      query = query.where("seq", order === "desc" ? "<" : ">", after.seq);
    }
    const rows = await query.orderBy("seq", order).limit(limit + 1).execute();
    return listOf(rows.slice(0, limit).map((r) => this.fileObject(r)), rows.length > limit);
  }

  /** `DELETE /v1/files/{id}`: the mapping and, for an upload, its dataset (jobs made from it keep the rows they pinned). */
  async deleteFile(tenant: string, md: Metadata, id: string) {
    const row = await this.fileRow(tenant, id);
    if (row.dataset_version !== null) {
      await call(this.dataset.get(), "deleteDataset", { name: row.dataset_version.replace(/\/versions\/.*$/, ""), force: true }, md).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
    await this.db.deleteFrom("openai_files").where("tenant", "=", tenant).where("file_id", "=", id).execute();
    return { id, object: "file", deleted: true };
  }

  async fileContent(tenant: string, id: string): Promise<{ filename: string; content: Readable }> {
    const row = await this.fileRow(tenant, id);
    return { filename: row.filename, content: await this.o.artifacts.get(row.content_digest) };
  }

  // ---- jobs ----

  private async jobRow(tenant: string, id: string): Promise<JobRow> {
    const row = await this.db.selectFrom("openai_jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", id).executeTakeFirst();
    if (!row) throw jobNotFound(id);
    return row;
  }

  /** The trainer's job; a row still marked validating is marked created once the trainer has it (a gateway that stopped mid-create). */
  private async trainerJob(md: Metadata, row: JobRow): Promise<FineTuningJob | undefined> {
    const get = call(this.trainer.get(), "getFineTuningJob", { name: `fineTuningJobs/${row.job_id}` }, md);
    if (row.trainer_created) return (await get).fineTuningJob;
    const j = await get.then(
      (r) => r.fineTuningJob,
      (err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      },
    );
    if (j !== undefined) {
      await this.db.updateTable("openai_jobs").set({ trainer_created: true }).where("tenant", "=", row.tenant).where("job_id", "=", row.job_id).execute();
      row.trainer_created = true;
    }
    return j;
  }

  /** The job as OpenAI shows one. */
  jobObject(row: JobRow, j: FineTuningJob | undefined) {
    const status = openAiStatus(row, j?.state);
    const a = j?.trainingArguments;
    const picked = (n: number | undefined, asked: number | "auto") => (n !== undefined && n > 0 ? n : asked);
    const asked = row.request.hyperparameters;
    const hyperparameters = {
      n_epochs: picked(a?.numTrainEpochs, asked.n_epochs),
      batch_size: picked(a ? a.perDeviceTrainBatchSize * Math.max(1, a.gradientAccumulationSteps) : undefined, asked.batch_size),
      learning_rate_multiplier: picked(a?.learningRate ? Number((a.learningRate / BASE_LEARNING_RATE).toPrecision(6)) : undefined, asked.learning_rate_multiplier),
    };
    const terminal = ["succeeded", "failed", "cancelled"].includes(status);
    const eta = j?.progress?.eta;
    const err = j?.state === FineTuningJob_State.STATE_FAILED ? j.error : undefined;
    return {
      object: "fine_tuning.job",
      id: row.job_id,
      model: row.model,
      created_at: seconds(row.create_time),
      finished_at: terminal ? seconds(j?.endTime) : null,
      fine_tuned_model: status === "succeeded" ? row.fine_tuned_model : null,
      organization_id: row.tenant,
      result_files: row.result_file ? [row.result_file] : [],
      status,
      validation_file: row.validation_file,
      training_file: row.training_file,
      hyperparameters,
      trained_tokens: status === "succeeded" ? (j?.progress?.processedTokens ?? null) : null,
      error: err ? { code: err.reason.toLowerCase(), message: err.message, param: openAiParamOf(err.metadata["field"], true) } : null,
      user_provided_suffix: row.suffix,
      seed: Number(row.seed),
      estimated_finish: status === "running" && eta ? Math.floor(Date.now() / 1000 + eta.seconds) : null,
      integrations: [],
      metadata: row.metadata,
      method: { type: "supervised", supervised: { hyperparameters } },
    };
  }

  private async event(db: Kysely<GatewayTables> | Transaction<GatewayTables>, tenant: string, jobId: string, e: { level?: "info" | "warn" | "error"; type?: "message" | "metrics"; message: string; data?: Record<string, unknown> }): Promise<void> {
    await db
      .withSchema(this.o.schema)
      .insertInto("openai_job_events")
      .values({ tenant, job_id: jobId, event_id: `ftevent-${randomBytes(12).toString("hex")}`, level: e.level ?? "info", type: e.type ?? "message", message: e.message, data: JSON.stringify(e.data ?? {}) })
      .execute();
  }

  /** A file of the caller's named by a job, ready to train on: its dataset version. */
  private async trainable(tenant: string, md: Metadata, id: string, param: string): Promise<string> {
    const row = await this.refreshed(md, await this.fileRow(tenant, id).catch(() => Promise.reject(badRequest(`Invalid ${param}: no file ${id} (upload it with purpose 'fine-tune').`, param, `invalid_${param}`))));
    if (row.purpose !== "fine-tune" || row.dataset_version === null) throw badRequest(`Invalid ${param}: ${id} has purpose '${row.purpose}', not 'fine-tune'.`, param, `invalid_${param}`);
    if (row.status === "uploaded") throw badRequest(`File ${id} is still being processed; retry once its status is 'processed'.`, param, "file_not_ready");
    if (row.status === "error") throw badRequest(`Invalid ${param}: ${id} failed its checks: ${row.status_details ?? ""}`, param, `invalid_${param}`);
    return row.dataset_version;
  }

  /** `POST /v1/fine_tuning/jobs`: a trainer job of the same id whose follow-up registers the adapter. */
  async createJob(tenant: string, md: Metadata, body: unknown) {
    const r = parseFineTuningJobCreate(body);
    const viaMethod = typeof body === "object" && body !== null && "method" in body && (body as { method: unknown }).method != null;
    const train = await this.trainable(tenant, md, r.trainingFile, "training_file");
    const evalV = r.validationFile === null ? "" : await this.trainable(tenant, md, r.validationFile, "validation_file");
    const id = `ftjob-${randomBytes(12).toString("hex")}`;
    const seed = r.seed ?? randomInt(0, 2_147_483_647);
    const row = await this.o.db.transaction().execute(async (trx) => {
      const made = await trx
        .withSchema(this.o.schema)
        .insertInto("openai_jobs")
        .values({
          tenant,
          job_id: id,
          model: r.model,
          training_file: r.trainingFile,
          validation_file: r.validationFile,
          suffix: r.suffix,
          seed,
          metadata: r.metadata === null ? null : JSON.stringify(r.metadata),
          request: JSON.stringify(r.request),
          fine_tuned_model: fineTunedModelName(r.model, tenant, r.suffix, id),
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.event(trx, tenant, id, { message: `Validating training file: ${r.trainingFile}${r.validationFile ? ` and validation file: ${r.validationFile}` : ""}` });
      return made;
    });
    const args = trainingArgumentsOf(r.request.hyperparameters);
    try {
      const res = await call(
        this.trainer.get(),
        "createFineTuningJob",
        {
          fineTuningJobId: id,
          requestId: id,
          fineTuningJob: FineTuningJob.fromPartial({
            displayName: r.suffix ?? id,
            labels: { source: "openai-api" },
            baseModel: `models/${r.model}`,
            trainDatasetVersion: train,
            evalDatasetVersion: evalV,
            method: r.lora.method,
            loraConfig: { r: r.lora.r, loraAlpha: r.lora.alpha, loraDropout: r.lora.dropout, targetModules: r.lora.targetModules },
            // Every step is logged, as OpenAI reports a metrics event per step; rows are not
            // packed, so that a batch is batch_size examples as OpenAI counts it.
            trainingArguments: { ...args, seed, maxSeqLength: r.lora.maxSeqLength, loggingSteps: 1, packing: false },
            followUp: { registration: { adapter: `models/${r.model}/adapters/${id}`, description: `OpenAI fine-tuning job ${id}${r.suffix ? ` (${r.suffix})` : ""}`, labels: { source: "openai-api" } } },
          }),
        },
        md,
      );
      return await this.o.db.transaction().execute(async (trx) => {
        for (const w of res.warnings) await this.event(trx, tenant, id, { level: "warn", message: w.message, data: { reason: w.reason, param: openAiParamOf(w.field, viaMethod) } });
        const created = await trx.withSchema(this.o.schema).updateTable("openai_jobs").set({ trainer_created: true }).where("tenant", "=", tenant).where("job_id", "=", id).returningAll().executeTakeFirstOrThrow();
        return this.jobObject(created, res.fineTuningJob);
      });
    } catch (err) {
      await this.db.deleteFrom("openai_job_events").where("tenant", "=", tenant).where("job_id", "=", id).execute();
      await this.db.deleteFrom("openai_jobs").where("tenant", "=", tenant).where("job_id", "=", row.job_id).execute();
      if (err instanceof AppError) {
        if (err.field?.endsWith("base_model") && (err.code === "NOT_FOUND" || err.code === "INVALID_ARGUMENT")) {
          throw new OpenAiError(400, "invalid_request_error", `Model ${r.model} is not available for fine-tuning or does not exist: ${err.message}`, "model_not_available", "model");
        }
        const oe = toOpenAiError(err);
        throw new OpenAiError(oe.status, oe.type, err.message, oe.code, openAiParamOf(err.field, viaMethod) ?? oe.param);
      }
      throw err;
    }
  }

  async getJob(tenant: string, md: Metadata, id: string) {
    const row = await this.jobRow(tenant, id);
    return this.jobObject(row, await this.trainerJob(md, row));
  }

  /** `GET /v1/fine_tuning/jobs`: newest first; `after` a job id; `metadata[k]=v` keeps jobs with that metadata. */
  async listJobs(tenant: string, md: Metadata, q: Record<string, unknown>) {
    const limit = limitOf(q, 20, 100);
    let query = this.db.selectFrom("openai_jobs").selectAll().where("tenant", "=", tenant);
    for (const [k, v] of Object.entries(q)) {
      const key = /^metadata\[(.+)\]$/.exec(k)?.[1];
      if (key !== undefined) query = query.where(sql<boolean>`metadata ->> ${key} = ${String(v)}`);
    }
    if (q["metadata"] === "null") query = query.where("metadata", "is", null);
    if (typeof q["after"] === "string") {
      const after = await this.jobRow(tenant, q["after"]).catch(() => {
        throw badRequest(`Invalid 'after': no fine-tuning job ${q["after"]}.`, "after", "invalid_value");
      });
      query = query.where("seq", "<", after.seq);
    }
    const rows = await query.orderBy("seq", "desc").limit(limit + 1).execute();
    const page = rows.slice(0, limit);
    const jobs = await Promise.all(page.map(async (r) => this.jobObject(r, await this.trainerJob(md, r))));
    return listOf(jobs, rows.length > limit);
  }

  async cancelJob(tenant: string, md: Metadata, id: string) {
    const row = await this.jobRow(tenant, id);
    if (!row.trainer_created) throw badRequest(`Job ${id} is still validating its files; cancel it once it is queued.`, "fine_tuning_job_id", "job_not_cancellable");
    const res = await call(this.trainer.get(), "cancelFineTuningJob", { name: `fineTuningJobs/${id}`, reason: "cancelled through the OpenAI API" }, md).catch((err: unknown) => {
      if (err instanceof AppError && err.code === "FAILED_PRECONDITION") throw badRequest(`Job ${id} has already ended; only a queued or running job can be cancelled.`, "fine_tuning_job_id", "job_not_cancellable");
      throw err;
    });
    return this.jobObject(row, res.fineTuningJob);
  }

  /** `GET /v1/fine_tuning/jobs/{id}/events`: newest first; `after` an event id. */
  async listEvents(tenant: string, id: string, q: Record<string, unknown>) {
    await this.jobRow(tenant, id);
    const limit = limitOf(q, 20, 10_000);
    let query = this.db.selectFrom("openai_job_events").selectAll().where("tenant", "=", tenant).where("job_id", "=", id);
    if (typeof q["after"] === "string") {
      const after = await this.db.selectFrom("openai_job_events").select("seq").where("tenant", "=", tenant).where("event_id", "=", q["after"]).executeTakeFirst();
      if (!after) throw badRequest(`Invalid 'after': no event ${q["after"]} of job ${id}.`, "after", "invalid_value");
      query = query.where("seq", "<", after.seq);
    }
    const rows = await query.orderBy("seq", "desc").limit(limit + 1).execute();
    const events = rows.slice(0, limit).map((e) => ({ object: "fine_tuning.job.event", id: e.event_id, created_at: seconds(e.create_time), level: e.level, message: e.message, data: e.data, type: e.type }));
    return listOf(events, rows.length > limit);
  }

  /** `GET /v1/fine_tuning/jobs/{id}/checkpoints`: the trainer's checkpoints, newest first, with their losses. */
  async listCheckpoints(tenant: string, md: Metadata, id: string, q: Record<string, unknown>) {
    const row = await this.jobRow(tenant, id);
    const limit = limitOf(q, 10, 1000);
    if (!row.trainer_created) return listOf([], false);
    const all = [];
    let pageToken = "";
    do {
      const page = await call(this.trainer.get(), "listCheckpoints", { parent: `fineTuningJobs/${id}`, pageSize: 1000, pageToken }, md);
      all.push(...page.checkpoints);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    const short = id.replace(/^ftjob-/, "");
    let items = all
      .sort((a, b) => b.step - a.step)
      .map((c) => ({
        object: "fine_tuning.job.checkpoint",
        id: `ftckpt-${short}-${c.step}`,
        created_at: seconds(c.createTime),
        // The trainer has no token accuracy: only the losses it measured are given.
        metrics: { step: c.step, train_loss: c.loss, ...(c.evalLoss !== undefined ? { valid_loss: c.evalLoss, full_valid_loss: c.evalLoss } : {}) },
        fine_tuning_job_id: id,
        fine_tuned_model_checkpoint: `${row.fine_tuned_model}:ckpt-step-${c.step}`,
        step_number: c.step,
      }));
    if (typeof q["after"] === "string") {
      const at = items.findIndex((c) => c.id === q["after"]);
      if (at < 0) throw badRequest(`Invalid 'after': no checkpoint ${q["after"]} of job ${id}.`, "after", "invalid_value");
      items = items.slice(at + 1);
    }
    return listOf(items.slice(0, limit), items.length > limit);
  }

  // ---- what the trainer and the registry announce ----

  /** Records the trainer's events of the jobs made here as OpenAI's job events, the results file when a job succeeds, and the registered version. */
  consume(consumer: EventConsumer<GatewayTables>): void {
    const jobOf = async (trx: Transaction<GatewayTables>, tenant: string, name: string): Promise<JobRow | undefined> => {
      const id = name.replace(/^fineTuningJobs\//, "");
      return trx.withSchema(this.o.schema).selectFrom("openai_jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", id).executeTakeFirst();
    };
    const on = <T extends { meta?: EventMeta | undefined; fineTuningJob: string }>(def: EventDef<T>, f: (e: T, row: JobRow, trx: Transaction<GatewayTables>) => Promise<void>) =>
      consumer.on(def, async (e, { trx, meta }) => {
        const row = await jobOf(trx, meta.tenant, e.fineTuningJob);
        if (row) await f(e, row, trx);
      });
    const say = (trx: Transaction<GatewayTables>, row: JobRow, e: Parameters<OpenAiFineTuning["event"]>[3]) => this.event(trx, row.tenant, row.job_id, e);

    on(trainerEvents.queued, (_e, row, trx) => say(trx, row, { message: "Files validated, moving job to queued state" }));
    on(trainerEvents.started, (e, row, trx) =>
      say(trx, row, { message: e.attempt > 1 ? `Fine-tuning job resumed (attempt ${e.attempt}) from ${e.resumedFromCheckpoint || "the start"}` : "Fine-tuning job started" }),
    );
    on(trainerEvents.progressed, (e, row, trx) =>
      say(trx, row, {
        type: "metrics",
        message: `Step ${e.step}/${e.totalSteps}: training loss=${e.loss.toFixed(4)}${e.evalLoss !== undefined ? `, validation loss=${e.evalLoss.toFixed(4)}` : ""}`,
        data: { step: e.step, train_loss: e.loss, total_steps: e.totalSteps, ...(e.evalLoss !== undefined ? { valid_loss: e.evalLoss } : {}) },
      }),
    );
    on(trainerEvents.checkpointSaved, (e, row, trx) => say(trx, row, { message: `Checkpoint created at step ${e.step}` }));
    on(trainerEvents.succeeded, async (_e, row, trx) => {
      const file = await this.resultsFile(trx, row);
      await say(trx, row, { message: `Training finished; results file ${file}. Registering the adapter` });
    });
    on(trainerEvents.failed, (e, row, trx) => say(trx, row, { level: "error", message: `Fine-tuning job failed: ${e.error?.message ?? "see the job's error"}` }));
    on(trainerEvents.cancelled, (_e, row, trx) => say(trx, row, { message: "Fine-tuning job cancelled" }));
    on(trainerEvents.adapterVersionCreated, async (e, row, trx) => {
      await trx.withSchema(this.o.schema).updateTable("openai_jobs").set({ adapter_version: e.adapterVersion }).where("tenant", "=", row.tenant).where("job_id", "=", row.job_id).execute();
      await say(trx, row, { message: `New fine-tuned model created: ${row.fine_tuned_model}` });
      await say(trx, row, { message: "The job has successfully completed" });
    });
  }

  /**
   * The job's step metrics as OpenAI's results file: a CSV (`step,train_loss,train_accuracy,
   * valid_loss,valid_mean_token_accuracy`, the accuracies empty: the trainer does not measure
   * them), base64-encoded as OpenAI serves it.
   */
  private async resultsFile(trx: Transaction<GatewayTables>, row: JobRow): Promise<string> {
    const metrics = await trx.withSchema(this.o.schema).selectFrom("openai_job_events").select("data").where("tenant", "=", row.tenant).where("job_id", "=", row.job_id).where("type", "=", "metrics").orderBy("seq").execute();
    const lines = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"];
    for (const { data } of metrics) {
      const d = data as { step: number; train_loss: number; valid_loss?: number };
      lines.push(`${d.step},${d.train_loss},,${d.valid_loss ?? ""},`);
    }
    const bytes = Buffer.from(Buffer.from(`${lines.join("\n")}\n`).toString("base64"));
    const ref = await this.o.artifacts.put(bytes);
    const id = `file-${randomBytes(12).toString("hex")}`;
    await trx
      .withSchema(this.o.schema)
      .insertInto("openai_files")
      .values({ tenant: row.tenant, file_id: id, purpose: "fine-tune-results", filename: "step_metrics.csv", bytes: bytes.length, content_digest: ref.digest, dataset_version: null, fine_tuning_job: row.job_id, status: "processed", status_details: null })
      .execute();
    await trx.withSchema(this.o.schema).updateTable("openai_jobs").set({ result_file: id }).where("tenant", "=", row.tenant).where("job_id", "=", row.job_id).execute();
    return id;
  }

  /** The registry name (`tiny:ftjob-…@1`) a `fine_tuned_model` of the tenant's stands for, or undefined. */
  async registryNameOf(tenant: string, name: string): Promise<{ registryName: string | undefined; job: string } | undefined> {
    const row = await this.db.selectFrom("openai_jobs").select(["job_id", "adapter_version"]).where("tenant", "=", tenant).where("fine_tuned_model", "=", name).executeTakeFirst();
    if (!row) return undefined;
    const m = /^models\/([^/]+)\/adapters\/([^/]+)\/versions\/([^/]+)$/.exec(row.adapter_version ?? "");
    return { job: row.job_id, registryName: m ? `${m[1]}:${m[2]}@${m[3]}` : undefined };
  }

  /** The tenant's servable fine-tuned models (their jobs succeeded and the adapter is registered). */
  async servable(tenant: string): Promise<{ id: string; created: number; parent: string }[]> {
    const rows = await this.db.selectFrom("openai_jobs").select(["fine_tuned_model", "model", "create_time"]).where("tenant", "=", tenant).where("adapter_version", "is not", null).orderBy("seq").execute();
    return rows.map((r) => ({ id: r.fine_tuned_model, created: seconds(r.create_time)!, parent: r.model }));
  }
}
