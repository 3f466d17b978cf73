import type { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { join } from "node:path";
import {
  AppError,
  cachedFolder,
  canonicalJson,
  checkLabels,
  checkRequestId,
  checkResourceId,
  checkSameRequest,
  checkText,
  digestHex,
  enqueueEvents,
  invalidArgument,
  nestedResourceName,
  notFound,
  paginate,
  parseNestedName,
  prefixedDigest,
  putFolder,
  resourceName,
  type ArtifactStore,
} from "@lathe/kit";
import { listTensors, ModelFormatError, readPeftAdapter, type PeftAdapter } from "@lathe/models";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import { Adapter, AdapterVersion, type CreateAdapterRequest, type CreateAdapterVersionRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { Kysely, Transaction } from "kysely";
import { sql } from "kysely";
import type { ModelRow, RegistryTables } from "../db/migrations.js";
import { adapterVersionCreated } from "../events.js";
import { recordLineage } from "./lineage.js";
import { schema, type ModelStore } from "./models.js";
import { unstage, type StagedFolder } from "./folders.js";

/** Where a new version's files come from: staged when needed, shown to the caller as `shownAs`. */
export type VersionSource = () => Promise<{ folder: StagedFolder; shownAs: string; field: string }>;

/** What a CreateAdapterVersion request_id is bound to (snake_case fields, and uploaded files). */
export function versionRequestBody(req: CreateAdapterVersionRequest, files?: readonly { path: string; digest: string }[]): Record<string, unknown> {
  const v = req.adapterVersion;
  return {
    parent: req.parent,
    allow_missing: req.allowMissing,
    adapter_version: v
      ? {
          description: v.description,
          labels: v.labels,
          artifact_uri: v.artifactUri,
          method: v.method,
          fine_tuning_job: v.fineTuningJob,
          train_dataset_version: v.trainDatasetVersion,
          eval_dataset_version: v.evalDatasetVersion,
          checkpoint: v.checkpoint,
          chat_template_fingerprint: v.chatTemplateFingerprint,
          creator: v.creator,
        }
      : null,
    ...(files ? { files: files.map((f) => ({ path: f.path, digest: prefixedDigest(f.digest) })) } : {}),
  };
}

const source = "registry";
const isSeq = { seq: "int" } as const;

export const adapterName = (modelId: string, adapterId: string) => nestedResourceName(["models", "adapters"], [modelId, adapterId]);
export const versionName = (modelId: string, adapterId: string, version: number) => nestedResourceName(["models", "adapters", "versions"], [modelId, adapterId, version]);

/** Parses `models/{m}/adapters/{a}/versions/{n}`. */
export function parseVersionName(field: string, name: string): { modelId: string; adapterId: string; version: number } {
  const [modelId, adapterId, v] = parseNestedName(field, name, ["models", "adapters", "versions"]) as [string, string, string];
  const version = Number(v);
  if (!/^[1-9][0-9]*$/.test(v)) throw invalidArgument(field, `the version in ${JSON.stringify(name)} must be a positive integer`);
  return { modelId, adapterId, version };
}

/**
 * Checks a PEFT adapter against its base model: every adapted module exists in the base and
 * lora_A/lora_B fit its weight (A: r × in, B: out × r).
 */
export async function checkAdapterFitsBase(adapter: PeftAdapter, baseDir: string, field: string): Promise<void> {
  const base = new Map((await listTensors(baseDir)).map((t) => [t.name, t]));
  for (const t of adapter.tensors) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(t.name);
    if (!m) continue;
    const weight = base.get(`${m[1]}.weight`);
    if (!weight) throw invalidArgument(field, `the adapter's ${t.name} adapts ${m[1]}, which the base model does not have`);
    const [out, inp] = weight.shape as [number, number];
    const ok = m[2] === "A" ? t.shape[0] === adapter.r && t.shape[1] === inp : t.shape[0] === out && t.shape[1] === adapter.r;
    if (!ok) throw invalidArgument(field, `the adapter's ${t.name} has shape [${t.shape.join(", ")}], which does not fit ${m[1]}.weight [${weight.shape.join(", ")}] with r=${adapter.r}`);
  }
}

/** Adapters of base models and their immutable versions. */
export class AdapterStore {
  constructor(
    private readonly db: Kysely<RegistryTables>,
    private readonly models: ModelStore,
    private readonly artifacts: ArtifactStore,
    private readonly cacheDir: string,
    private readonly onEvents: () => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  private async toAdapter(r: RegistryTables["adapters"] & { create_time: Date; update_time: Date }): Promise<Adapter> {
    const stats = await this.t
      .selectFrom("adapter_versions")
      .select([sql<number>`count(*)::int`.as("n"), sql<number | null>`max(version)`.as("latest")])
      .where("tenant", "=", r.tenant)
      .where("model_id", "=", r.model_id)
      .where("adapter_id", "=", r.adapter_id)
      .executeTakeFirst();
    return Adapter.fromPartial({
      name: adapterName(r.model_id, r.adapter_id),
      displayName: r.display_name,
      description: r.description,
      labels: r.labels as unknown as Record<string, string>,
      createTime: r.create_time,
      updateTime: r.update_time,
      baseModel: resourceName("models", r.model_id),
      latestVersion: stats?.latest ? versionName(r.model_id, r.adapter_id, stats.latest) : "",
      versionCount: stats?.n ?? 0,
    });
  }

  async create(tenant: string, req: CreateAdapterRequest): Promise<Adapter> {
    const model = await this.models.record(tenant, "parent", req.parent);
    const id = checkResourceId("adapter_id", req.adapterId);
    const requestId = checkRequestId("request_id", req.requestId);
    const values = {
      tenant,
      model_id: model.model_id,
      adapter_id: id,
      display_name: checkText("adapter.display_name", req.adapter?.displayName ?? "", 200) || id,
      description: checkText("adapter.description", req.adapter?.description ?? "", 2000),
      labels: JSON.stringify(checkLabels("adapter.labels", req.adapter?.labels ?? {})),
      request_id: requestId,
    };
    const body = { parent: req.parent, adapter_id: id, adapter: { display_name: req.adapter?.displayName ?? "", description: values.description, labels: req.adapter?.labels ?? {} } };
    // The adapter an earlier call with this request_id made (the same request), checked before
    // inserting and again when the insert lost a race to it.
    const replay = async () => {
      if (requestId === null) return undefined;
      const earlier = await this.t.selectFrom("adapters").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
      if (!earlier) return undefined;
      checkSameRequest(requestId, adapterName(earlier.model_id, earlier.adapter_id), earlier.request_body ?? { parent: resourceName("models", earlier.model_id), adapter_id: earlier.adapter_id }, body);
      return this.toAdapter(earlier as never);
    };
    const replayed = await replay();
    if (replayed) return replayed;
    const inserted = await this.t
      .insertInto("adapters")
      .values({ ...values, request_body: requestId === null ? null : canonicalJson(body) })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
    if (inserted) return this.toAdapter(inserted as never);
    const raced = await replay();
    if (raced) return raced;
    throw new AppError("ALREADY_EXISTS", "ADAPTER_ALREADY_EXISTS", `${adapterName(model.model_id, id)} already exists`, { name: adapterName(model.model_id, id) });
  }

  async record(tenant: string, field: string, name: string) {
    const [modelId, adapterId] = parseNestedName(field, name, ["models", "adapters"]) as [string, string];
    const r = await this.t.selectFrom("adapters").selectAll().where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).executeTakeFirst();
    if (!r) throw notFound("adapter", name);
    return r;
  }

  async get(tenant: string, name: string): Promise<Adapter> {
    return this.toAdapter((await this.record(tenant, "name", name)) as never);
  }

  async list(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ adapters: Adapter[]; nextPageToken: string }> {
    // `models/-`: the adapters of every model (AIP-159), as the API documents.
    const modelId = req.parent === "models/-" ? undefined : (await this.models.record(tenant, "parent", req.parent)).model_id;
    const { rows, nextPageToken } = await paginate({
      scope: ["registry.adapters", tenant, req.parent],
      request: req,
      shape: isSeq,
      fetch: (after, limit) => {
        let q = this.t.selectFrom("adapters").selectAll().where("tenant", "=", tenant);
        if (modelId !== undefined) q = q.where("model_id", "=", modelId);
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { adapters: await Promise.all(rows.map((r) => this.toAdapter(r as never))), nextPageToken };
  }

  async delete(tenant: string, name: string, force: boolean): Promise<void> {
    const a = await this.record(tenant, "name", name);
    await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      const versions = await t.selectFrom("adapter_versions").select("version").where("tenant", "=", tenant).where("model_id", "=", a.model_id).where("adapter_id", "=", a.adapter_id).execute();
      if (versions.length > 0 && !force) throw new AppError("FAILED_PRECONDITION", "ADAPTER_HAS_VERSIONS", `${name} has ${versions.length} version(s); delete with force to remove them too`, { name });
      const prefix = `${name}/`;
      await t.deleteFrom("aliases").where("tenant", "=", tenant).where("name", "like", `${prefix}aliases/%`).execute();
      await t.deleteFrom("promotion_rules").where("tenant", "=", tenant).where("name", "like", `${prefix}%`).execute();
      await t.deleteFrom("adapter_versions").where("tenant", "=", tenant).where("model_id", "=", a.model_id).where("adapter_id", "=", a.adapter_id).execute();
      await t.deleteFrom("adapters").where("tenant", "=", tenant).where("model_id", "=", a.model_id).where("adapter_id", "=", a.adapter_id).execute();
    });
  }

  /** The base model's files as a local folder (materialized from the artifact store once). */
  async baseFolder(model: ModelRow): Promise<string> {
    const digest = model.import?.artifactDigest;
    if (!digest) throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_IMPORTED", `models/${model.model_id} was registered without an import; register it again from its folder`, { name: resourceName("models", model.model_id) });
    return cachedFolder(this.artifacts, digestHex(digest), join(this.cacheDir, "folders"));
  }

  /**
   * Registers a version from a PEFT folder (ours or one PEFT wrote): checks it fits the base
   * model, stores its files by digest, and records where it came from, in one transaction with
   * its `adapter_version_created` event and lineage. `body` is what `request_id` binds (see
   * versionRequestBody); `stage` stages the files, only when the version is really made.
   */
  async createVersion(tenant: string, req: CreateAdapterVersionRequest, actor: string, body: unknown, stage: VersionSource, followUp?: FollowUp): Promise<AdapterVersion> {
    const v = req.adapterVersion;
    if (!v) throw invalidArgument("adapter_version", "is required");
    const [modelId, adapterId] = parseNestedName("parent", req.parent, ["models", "adapters"]) as [string, string];
    const requestId = checkRequestId("request_id", req.requestId);
    let adapter = await this.t.selectFrom("adapters").selectAll().where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).executeTakeFirst();
    if (!adapter) {
      if (!req.allowMissing) throw notFound("adapter", req.parent);
      await this.create(tenant, { parent: resourceName("models", modelId), adapterId, adapter: undefined, requestId: "" }).catch((err: unknown) => {
        if (!(err instanceof AppError && err.code === "ALREADY_EXISTS")) throw err;
      });
      adapter = await this.t.selectFrom("adapters").selectAll().where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).executeTakeFirstOrThrow();
    }
    if (requestId !== null) {
      const earlier = await this.t.selectFrom("adapter_versions").selectAll().where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).where("request_id", "=", requestId).executeTakeFirst();
      if (earlier) {
        const earlierName = versionName(modelId, adapterId, earlier.version);
        checkSameRequest(requestId, earlierName, earlier.request_body ?? body, body);
        return this.getVersion(tenant, earlierName);
      }
    }
    const model = await this.models.record(tenant, "parent", resourceName("models", modelId));
    const staged = await stage();
    let peft: PeftAdapter;
    let stored;
    try {
      try {
        peft = await readPeftAdapter(staged.folder.dir);
      } catch (err) {
        if (err instanceof ModelFormatError) throw invalidArgument(staged.field, `${staged.shownAs} is not a PEFT LoRA adapter: ${unstage(err.message, staged.folder, staged.shownAs)}`);
        throw err;
      }
      await checkAdapterFitsBase(peft, await this.baseFolder(model), staged.field);
      stored = await putFolder(this.artifacts, staged.folder.dir);
    } finally {
      await staged.folder.remove();
    }
    const fingerprint = v.chatTemplateFingerprint || model.import?.chatTemplateFingerprint || "";
    const meta = AdapterVersion.fromPartial({
      description: checkText("adapter_version.description", v.description, 2000),
      labels: checkLabels("adapter_version.labels", v.labels),
      artifactDigest: prefixedDigest(stored.digest),
      artifactUri: v.artifactUri,
      sizeBytes: stored.size,
      method: v.method === FineTuningMethod.FINE_TUNING_METHOD_UNSPECIFIED ? FineTuningMethod.FINE_TUNING_METHOD_LORA : v.method,
      loraConfig: { r: peft.r, loraAlpha: peft.loraAlpha, loraDropout: peft.loraDropout, targetModules: peft.targetModules, useRslora: peft.useRslora },
      fineTuningJob: v.fineTuningJob,
      trainDatasetVersion: v.trainDatasetVersion,
      evalDatasetVersion: v.evalDatasetVersion,
      checkpoint: v.checkpoint,
      chatTemplateFingerprint: fingerprint,
      baseModelDigest: model.import?.artifactDigest ?? "",
      creator: v.creator || actor,
    });
    const name = await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      // Version numbers are taken under a lock on the adapter row, so two registrations never collide.
      await t.selectFrom("adapters").select("adapter_id").where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).forUpdate().execute();
      const last = await t.selectFrom("adapter_versions").select(sql<number | null>`max(version)`.as("v")).where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).executeTakeFirst();
      const version = (last?.v ?? 0) + 1;
      const name = versionName(modelId, adapterId, version);
      await t
        .insertInto("adapter_versions")
        .values({ tenant, model_id: modelId, adapter_id: adapterId, version, meta: JSON.stringify(AdapterVersion.toJSON(meta)), artifact_digest: meta.artifactDigest, request_id: requestId, request_body: requestId === null ? null : canonicalJson(body) })
        .execute();
      await enqueueEvents(trx, schema, source, [
        {
          def: adapterVersionCreated,
          tenant,
          subject: name,
          payload: {
            adapterVersion: name,
            adapter: adapterName(modelId, adapterId),
            baseModel: resourceName("models", modelId),
            artifactDigest: meta.artifactDigest,
            artifactUri: meta.artifactUri,
            chatTemplateFingerprint: meta.chatTemplateFingerprint,
            fineTuningJob: meta.fineTuningJob,
            trainDatasetVersion: meta.trainDatasetVersion,
            evalDatasetVersion: meta.evalDatasetVersion,
            // What the job asked to happen next (evaluation, promotion), for the services that do it.
            ...(followUp ? { followUp } : {}),
          },
        },
      ]);
      await recordAdapterVersionLineage(trx, tenant, name, meta, resourceName("models", modelId));
      return name;
    });
    this.onEvents();
    return this.getVersion(tenant, name);
  }

  async versionRecord(tenant: string, field: string, name: string) {
    const { modelId, adapterId, version } = parseVersionName(field, name);
    const r = await this.t.selectFrom("adapter_versions").selectAll().where("tenant", "=", tenant).where("model_id", "=", modelId).where("adapter_id", "=", adapterId).where("version", "=", version).executeTakeFirst();
    if (!r) throw notFound("adapter_version", name);
    return r;
  }

  async getVersion(tenant: string, name: string): Promise<AdapterVersion> {
    return this.toVersion(tenant, await this.versionRecord(tenant, "name", name));
  }

  private async toVersion(tenant: string, r: { model_id: string; adapter_id: string; version: number; meta: unknown; create_time: Date }): Promise<AdapterVersion> {
    const name = versionName(r.model_id, r.adapter_id, r.version);
    const v = AdapterVersion.fromJSON({ ...(r.meta as object), name });
    v.createTime = r.create_time;
    v.updateTime = r.create_time;
    const evals = await this.t.selectFrom("version_evaluations").selectAll().where("tenant", "=", tenant).where("adapter_version", "=", name).orderBy("create_time").execute();
    v.evaluationRuns = evals.map((e) => e.evaluation_run);
    const lastEval = evals[evals.length - 1];
    v.headlineMetrics = lastEval ? (lastEval.metrics as AdapterVersion["headlineMetrics"]) : [];
    const aliases = await this.t.selectFrom("aliases").select("name").where("tenant", "=", tenant).where("adapter_version", "=", name).execute();
    v.aliases = aliases.map((a) => a.name);
    return v;
  }

  async listVersions(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ adapterVersions: AdapterVersion[]; nextPageToken: string }> {
    const a = await this.record(tenant, "parent", req.parent);
    const { rows, nextPageToken } = await paginate({
      scope: ["registry.adapter_versions", tenant, req.parent],
      request: req,
      shape: { v: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("adapter_versions").selectAll().where("tenant", "=", tenant).where("model_id", "=", a.model_id).where("adapter_id", "=", a.adapter_id);
        if (after) q = q.where("version", ">", after.v);
        return q.orderBy("version").limit(limit).execute();
      },
      keyOf: (r) => ({ v: r.version }),
    });
    return { adapterVersions: await Promise.all(rows.map((r) => this.toVersion(tenant, r))), nextPageToken };
  }
}

/** The edges a new adapter version brings: its base, its job, its checkpoint and its data. */
async function recordAdapterVersionLineage(trx: Transaction<RegistryTables>, tenant: string, name: string, v: AdapterVersion, baseModel: string): Promise<void> {
  const inputs = [baseModel, v.fineTuningJob, v.checkpoint, v.trainDatasetVersion, v.evalDatasetVersion].filter((x) => x !== "");
  await recordLineage(trx, tenant, { name, displayName: name, digest: v.artifactDigest, time: new Date() }, inputs);
}
