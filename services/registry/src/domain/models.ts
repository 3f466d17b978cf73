import { AppError, checkLabels, checkRequestId, checkResourceId, checkText, decodePageToken, encodePageToken, enqueueEvents, notFound, pageSize, parseName } from "@lathe/kit";
import type { Kysely } from "kysely";
import { Model, type CreateModelRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { ModelRow, RegistryTables } from "../db/migrations.js";
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

/** The API form of a stored model. Import metadata (architecture, sizes, digest) comes with issue #5. */
export function toModel(row: ModelRow): Model {
  return Model.fromPartial({
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
    private readonly onEvents: () => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  /**
   * Creates a model and its `model_created` event in one transaction. A repeated `request_id`
   * returns the model the first call created; the same id without it is ALREADY_EXISTS.
   */
  async create(tenant: string, m: NewModel): Promise<Model> {
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
    const id = parseName("name", name, "models");
    const row = await this.t.selectFrom("models").selectAll().where("tenant", "=", tenant).where("model_id", "=", id).executeTakeFirst();
    if (!row) throw notFound("model", name);
    return toModel(row);
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string }): Promise<{ models: Model[]; nextPageToken: string }> {
    const size = pageSize(req.pageSize);
    const after = decodePageToken(req.pageToken, (k): k is { seq: number } => typeof (k as { seq?: unknown })?.seq === "number");
    let q = this.t.selectFrom("models").selectAll().where("tenant", "=", tenant);
    if (after) q = q.where("seq", ">", after.seq);
    const rows = await q.orderBy("seq").limit(size + 1).execute();
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return { models: page.map(toModel), nextPageToken: rows.length > size && last ? encodePageToken({ seq: Number(last.seq) }) : "" };
  }

  async delete(tenant: string, name: string): Promise<void> {
    const id = parseName("name", name, "models");
    const deleted = await this.db.transaction().execute(async (trx) => {
      const row = await trx.withSchema(schema).deleteFrom("models").where("tenant", "=", tenant).where("model_id", "=", id).returning("model_id").executeTakeFirst();
      if (!row) return false;
      await enqueueEvents(trx, schema, source, [{ def: modelDeleted, tenant, subject: name, payload: { model: name } }]);
      return true;
    });
    if (!deleted) throw notFound("model", name);
    this.onEvents();
  }
}
