import { AppError, canonicalJson, checkLabels, checkRequestId, checkResourceId, checkSameRequest, checkText, enqueueEvents, notFound, paginate, parseName, prefixedDigest, resourceName } from "@lathe/kit";
import type { Kysely } from "kysely";
import { inspectModelFolder, ModelFormatError } from "@lathe/models";
import { Model, Model_State, TensorDtype, type CreateModelRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { ArtifactStore } from "@lathe/kit";
import { putFolder } from "@lathe/kit";
import type { ModelImport, ModelRow, RegistryTables } from "../db/migrations.js";
import { modelCreated, modelDeleted } from "../events.js";
import { unstage, type StagedFolder } from "./folders.js";

export const schema = "registry";
const source = "registry";

/** A validated CreateModel request. */
export interface NewModel {
  modelId: string;
  displayName: string;
  description: string;
  sourceUri: string;
  labels: Record<string, string>;
  requestId: string | null;
}

/**
 * Checks a CreateModel request (or an UploadModel header, `prefix` "header."); every error names
 * its field. A server-side import needs `source_uri`; for an upload it is only recorded.
 */
export function validateCreateModel(req: CreateModelRequest, prefix = "", sourceRequired = true): NewModel {
  const modelId = checkResourceId(`${prefix}model_id`, req.modelId);
  if (!req.model) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", `${prefix}model: is required`, { field: `${prefix}model` });
  const m = req.model;
  return {
    modelId,
    displayName: checkText(`${prefix}model.display_name`, m.displayName, 200) || modelId,
    description: checkText(`${prefix}model.description`, m.description, 2000),
    sourceUri: checkText(`${prefix}model.source_uri`, m.sourceUri, 4096, sourceRequired),
    labels: checkLabels(`${prefix}model.labels`, m.labels),
    requestId: checkRequestId(`${prefix}request_id`, req.requestId),
  };
}

/** What a request_id is bound to: the request's fields (snake_case), and the uploaded files. */
export function modelRequestBody(req: CreateModelRequest, files?: readonly { path: string; digest: string }[]): Record<string, unknown> {
  const m = req.model;
  return {
    model_id: req.modelId,
    model: m ? { display_name: m.displayName, description: m.description, source_uri: m.sourceUri, labels: m.labels } : null,
    ...(files ? { files: files.map((f) => ({ path: f.path, digest: prefixedDigest(f.digest) })) } : {}),
  };
}

const dtypes: Record<string, TensorDtype> = { F32: TensorDtype.TENSOR_DTYPE_F32, F16: TensorDtype.TENSOR_DTYPE_F16, BF16: TensorDtype.TENSOR_DTYPE_BF16 };

/**
 * Imports a staged Hugging Face model folder (plain files the registry wrote itself): libs/models
 * must load it (config, tensors, tokenizer), then the same files are copied into the artifact
 * store, addressed by digest. Errors name the problem, never the staging folder.
 */
export async function importModelFolder(artifacts: ArtifactStore, folder: StagedFolder, shownAs: string, field: string): Promise<ModelImport> {
  let inspection;
  try {
    inspection = await inspectModelFolder(folder.dir);
  } catch (err) {
    if (err instanceof ModelFormatError) throw new AppError("INVALID_ARGUMENT", "MODEL_FOLDER_INVALID", `${field}: ${shownAs} cannot be imported: ${unstage(err.message, folder, shownAs)}`, { field });
    throw err;
  }
  const stored = await putFolder(artifacts, folder.dir);
  return {
    architecture: inspection.config.architecture,
    modelType: inspection.config.modelType,
    parameterCount: inspection.parameterCount,
    vocabSize: inspection.config.vocabSize,
    contextLength: inspection.config.contextLength,
    dtype: inspection.dtype,
    chatTemplateFingerprint: inspection.chatTemplateFingerprint,
    artifactDigest: prefixedDigest(stored.digest),
    sizeBytes: stored.size,
  };
}

/** The API form of a stored model. */
export function toModel(row: ModelRow): Model {
  const imp = row.import;
  return Model.fromPartial({
    state: imp ? Model_State.STATE_READY : Model_State.STATE_UNSPECIFIED,
    architecture: imp?.architecture ?? "",
    modelType: imp?.modelType ?? "",
    parameterCount: imp?.parameterCount ?? 0,
    vocabSize: imp?.vocabSize ?? 0,
    contextLength: imp?.contextLength ?? 0,
    dtype: imp ? (dtypes[imp.dtype] ?? TensorDtype.TENSOR_DTYPE_UNSPECIFIED) : TensorDtype.TENSOR_DTYPE_UNSPECIFIED,
    chatTemplateFingerprint: imp?.chatTemplateFingerprint ?? "",
    artifactDigest: imp?.artifactDigest ?? "",
    sizeBytes: imp?.sizeBytes ?? 0,
    name: resourceName("models", row.model_id),
    displayName: row.display_name,
    description: row.description,
    sourceUri: row.source_uri,
    labels: row.labels,
    createTime: row.create_time,
    updateTime: row.update_time,
  });
}

/** Models of the registry, always within one tenant. */
export class ModelStore {
  constructor(
    private readonly db: Kysely<RegistryTables>,
    private readonly artifacts: ArtifactStore,
    private readonly onEvents: () => void,
  ) {}

  /** The stored row of a model, for the other parts of the registry. */
  async record(tenant: string, field: string, name: string): Promise<ModelRow> {
    const id = parseName(field, name, "models");
    const row = await this.t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("model_id", "=", id).executeTakeFirst();
    if (!row) throw notFound("model", name);
    return row;
  }

  private get t() {
    return this.db.withSchema(schema);
  }

  /**
   * The model an earlier call with this `request_id` created, when the same request is sent
   * again; REQUEST_ID_REUSED when the request differs; undefined when the id is new.
   */
  async replay(tenant: string, m: NewModel, body: unknown): Promise<Model | undefined> {
    if (m.requestId === null) return undefined;
    const earlier = await this.t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("request_id", "=", m.requestId).executeTakeFirst();
    if (!earlier) return undefined;
    checkSameRequest(m.requestId, resourceName("models", earlier.model_id), earlier.request_body ?? { model_id: earlier.model_id }, body);
    return toModel(earlier);
  }

  /**
   * Creates a model from a staged folder and its `model_created` event in one transaction. A
   * repeated `request_id` with the same request returns the model the first call created; the
   * same model id without it is ALREADY_EXISTS. `folder` stages the files only when needed.
   */
  async create(tenant: string, m: NewModel, body: unknown, folder: () => Promise<{ folder: StagedFolder; shownAs: string; field: string }>): Promise<Model> {
    const replayed = await this.replay(tenant, m, body);
    if (replayed) return replayed;
    const exists = await this.t.selectFrom("models").select("model_id").where("tenant", "=", tenant).where("model_id", "=", m.modelId).executeTakeFirst();
    if (exists) throw new AppError("ALREADY_EXISTS", "MODEL_ALREADY_EXISTS", `models/${m.modelId} already exists`, { name: resourceName("models", m.modelId) });
    const staged = await folder();
    let imported: ModelImport;
    try {
      imported = await importModelFolder(this.artifacts, staged.folder, staged.shownAs, staged.field);
    } finally {
      await staged.folder.remove();
    }
    const result = await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      const inserted = await t
        .insertInto("models")
        .values({
          tenant,
          model_id: m.modelId,
          display_name: m.displayName,
          description: m.description,
          source_uri: m.sourceUri,
          labels: JSON.stringify(m.labels),
          request_id: m.requestId,
          request_body: m.requestId === null ? null : canonicalJson(body),
          import: JSON.stringify(imported),
        })
        .onConflict((oc) => oc.doNothing())
        .returningAll()
        .executeTakeFirst();
      if (inserted) {
        await enqueueEvents(trx, schema, source, [
          {
            def: modelCreated,
            tenant,
            subject: resourceName("models", m.modelId),
            payload: { model: resourceName("models", m.modelId), displayName: m.displayName, sourceUri: m.sourceUri },
          },
        ]);
        return { row: inserted, created: true };
      }
      if (m.requestId !== null) {
        const earlier = await t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("request_id", "=", m.requestId).executeTakeFirst();
        if (earlier) {
          checkSameRequest(m.requestId, resourceName("models", earlier.model_id), earlier.request_body ?? { model_id: earlier.model_id }, body);
          return { row: earlier, created: false };
        }
      }
      throw new AppError("ALREADY_EXISTS", "MODEL_ALREADY_EXISTS", `models/${m.modelId} already exists`, { name: resourceName("models", m.modelId) });
    });
    if (result.created) this.onEvents();
    return toModel(result.row);
  }

  async get(tenant: string, name: string): Promise<Model> {
    return toModel(await this.record(tenant, "name", name));
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string }): Promise<{ models: Model[]; nextPageToken: string }> {
    const { rows, nextPageToken } = await paginate({
      scope: ["registry.models", tenant],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("models").selectAll().where("tenant", "=", tenant);
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { models: rows.map(toModel), nextPageToken };
  }

  async delete(tenant: string, name: string): Promise<void> {
    const id = parseName("name", name, "models");
    const deleted = await this.db.transaction().execute(async (trx) => {
      const adapters = await trx.withSchema(schema).selectFrom("adapters").select("adapter_id").where("tenant", "=", tenant).where("model_id", "=", id).execute();
      if (adapters.length > 0) {
        const names = adapters.map((a) => `${name}/adapters/${a.adapter_id}`);
        throw new AppError("FAILED_PRECONDITION", "MODEL_HAS_ADAPTERS", `${name} has adapters that depend on it: ${names.join(", ")}; delete them first`, { name, adapters: names.join(",") });
      }
      const row = await trx.withSchema(schema).deleteFrom("models").where("tenant", "=", tenant).where("model_id", "=", id).returning("model_id").executeTakeFirst();
      if (!row) return false;
      await enqueueEvents(trx, schema, source, [{ def: modelDeleted, tenant, subject: name, payload: { model: name } }]);
      return true;
    });
    if (!deleted) throw notFound("model", name);
    this.onEvents();
  }
}
