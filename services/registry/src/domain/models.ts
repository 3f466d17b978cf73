import { AppError, checkLabels, checkRequestId, checkResourceId, checkText, decodePageToken, encodePageToken, enqueueEvents, notFound, pageSize, parseName } from "@lathe/kit";
import type { Kysely } from "kysely";
import { inspectModelFolder, ModelFormatError } from "@lathe/models";
import { Model, Model_State, TensorDtype, type CreateModelRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { ArtifactStore } from "@lathe/kit";
import { putFolder } from "@lathe/kit";
import type { ModelImport, ModelRow, RegistryTables } from "../db/migrations.js";
import { modelCreated, modelDeleted } from "../events.js";

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

/** Checks a CreateModel request; every error names its field. */
export function validateCreateModel(req: CreateModelRequest): NewModel {
  const modelId = checkResourceId("model_id", req.modelId);
  if (!req.model) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "model: is required", { field: "model" });
  const m = req.model;
  return {
    modelId,
    displayName: checkText("model.display_name", m.displayName, 200) || modelId,
    description: checkText("model.description", m.description, 2000),
    sourceUri: checkText("model.source_uri", m.sourceUri, 4096, true),
    labels: checkLabels("model.labels", m.labels),
    requestId: checkRequestId("request_id", req.requestId),
  };
}

const dtypes: Record<string, TensorDtype> = { F32: TensorDtype.TENSOR_DTYPE_F32, F16: TensorDtype.TENSOR_DTYPE_F16, BF16: TensorDtype.TENSOR_DTYPE_BF16 };

/**
 * Imports a Hugging Face model folder: libs/models must load it (config, tensors, tokenizer), then
 * its files are copied into the artifact store, addressed by digest. Errors name the problem.
 */
export async function importModelFolder(artifacts: ArtifactStore, dir: string): Promise<ModelImport> {
  let inspection;
  try {
    inspection = await inspectModelFolder(dir);
  } catch (err) {
    if (err instanceof ModelFormatError) throw new AppError("INVALID_ARGUMENT", "MODEL_FOLDER_INVALID", `model.source_uri: ${dir} cannot be imported: ${err.message}`, { field: "model.source_uri" });
    throw err;
  }
  const stored = await putFolder(artifacts, dir);
  return {
    architecture: inspection.config.architecture,
    modelType: inspection.config.modelType,
    parameterCount: inspection.parameterCount,
    vocabSize: inspection.config.vocabSize,
    contextLength: inspection.config.contextLength,
    dtype: inspection.dtype,
    chatTemplateFingerprint: inspection.chatTemplateFingerprint,
    artifactDigest: `sha256:${stored.digest}`,
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
    name: `models/${row.model_id}`,
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
   * Creates a model and its `model_created` event in one transaction. A repeated `request_id`
   * returns the model the first call created; the same id without it is ALREADY_EXISTS.
   */
  async create(tenant: string, m: NewModel): Promise<Model> {
    if (m.requestId !== null) {
      const earlier = await this.t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("request_id", "=", m.requestId).executeTakeFirst();
      if (earlier?.model_id === m.modelId) return toModel(earlier);
    }
    const exists = await this.t.selectFrom("models").select("model_id").where("tenant", "=", tenant).where("model_id", "=", m.modelId).executeTakeFirst();
    if (exists && m.requestId === null) throw new AppError("ALREADY_EXISTS", "MODEL_ALREADY_EXISTS", `models/${m.modelId} already exists`, { name: `models/${m.modelId}` });
    const imported = exists ? null : await importModelFolder(this.artifacts, m.sourceUri);
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
          import: imported ? JSON.stringify(imported) : null,
        })
        .onConflict((oc) => oc.doNothing())
        .returningAll()
        .executeTakeFirst();
      if (inserted) {
        await enqueueEvents(trx, schema, source, [
          {
            def: modelCreated,
            tenant,
            subject: `models/${m.modelId}`,
            payload: { model: `models/${m.modelId}`, displayName: m.displayName, sourceUri: m.sourceUri },
          },
        ]);
        return { row: inserted, created: true };
      }
      if (m.requestId !== null) {
        const earlier = await t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("request_id", "=", m.requestId).executeTakeFirst();
        if (earlier) {
          if (earlier.model_id !== m.modelId) {
            throw new AppError("INVALID_ARGUMENT", "REQUEST_ID_REUSED", `request_id: was used to create models/${earlier.model_id}, not models/${m.modelId}`, { field: "request_id" });
          }
          return { row: earlier, created: false };
        }
      }
      throw new AppError("ALREADY_EXISTS", "MODEL_ALREADY_EXISTS", `models/${m.modelId} already exists`, { name: `models/${m.modelId}` });
    });
    if (result.created) this.onEvents();
    return toModel(result.row);
  }

  async get(tenant: string, name: string): Promise<Model> {
    return toModel(await this.record(tenant, "name", name));
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string }): Promise<{ models: Model[]; nextPageToken: string }> {
    const size = pageSize(req.pageSize);
    const after = decodePageToken(["registry.models", tenant], req.pageToken, { seq: "int" });
    let q = this.t.selectFrom("models").selectAll().where("tenant", "=", tenant);
    if (after) q = q.where("seq", ">", after.seq);
    const rows = await q.orderBy("seq").limit(size + 1).execute();
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return { models: page.map(toModel), nextPageToken: rows.length > size && last ? encodePageToken(["registry.models", tenant], { seq: Number(last.seq) }) : "" };
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
