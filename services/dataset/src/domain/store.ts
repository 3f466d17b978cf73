import { randomUUID } from "node:crypto";
import {
  AppError,
  checkLabels,
  checkRequestId,
  checkResourceId,
  checkSameRequest,
  checkText,
  enqueueEvents,
  nestedResourceName,
  notFound,
  paginate,
  parseName,
  parseNestedName,
  resourceName,
  type NewEvent,
} from "@lathe/kit";
import { sql, type Kysely, type Transaction } from "kysely";
import { Dataset, DatasetVersion, QualityReport, type CreateDatasetRequest } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import type { DataCheck } from "@lathe/proto/lathe/type/v1/data_check";
import type { DatasetRowRecord, DatasetTables, VersionRecord } from "../db/migrations.js";
import { checkCleanLabels, checkCleanText } from "./control-chars.js";
import type { RowSink, StoredRow } from "./processor.js";
import { createDatasetRequest, type CanonicalRequest } from "./requests.js";

export const schema = "dataset";
const source = "dataset";

const isSeq = { seq: "int" } as const;

/** A stored version: its identity, its API form and its report. */
export interface VersionEntry {
  key: string;
  datasetId: string;
  versionId: string;
  version: DatasetVersion;
  report: QualityReport;
  /** The canonical request that made it, when it carried a request_id (null for older versions). */
  request: CanonicalRequest | null;
}

/**
 * Thrown by `finalize` when another call with the same request_id made its version first (two
 * retries racing): the caller removes what it staged and answers as a retry would.
 */
export class RequestReplayed extends Error {
  constructor(readonly earlier: VersionEntry) {
    super(`${earlier.version.name} was made by an earlier call with this request_id`);
  }
}

/**
 * A failed write of row content, without that content. Database errors carry the statement's
 * parameters (PGlite) or quote the offending value (`detail`, `where`); a log line must hold
 * neither, so only the SQLSTATE goes on.
 */
function withoutContent(err: unknown): unknown {
  if (err instanceof AppError || err instanceof RequestReplayed) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const out = new Error(`a database write of dataset content failed${typeof code === "string" ? ` (code ${code})` : ""}`);
  if (typeof code === "string") Object.assign(out, { code });
  return out;
}

export function versionName(datasetId: string, versionId: string): string {
  return nestedResourceName(["datasets", "versions"], [datasetId, versionId]);
}

/** Datasets, versions and rows of the dataset service, always within one tenant. */
export class DatasetStore {
  constructor(
    readonly db: Kysely<DatasetTables>,
    private readonly onEvents: () => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  private async toDataset(row: DatasetRowRecord): Promise<Dataset> {
    const stats = await this.t
      .selectFrom("versions")
      .select([sql<number>`count(*)::int`.as("n"), sql<string | null>`(array_agg(version_id order by seq desc))[1]`.as("latest")])
      .where("tenant", "=", row.tenant)
      .where("dataset_id", "=", row.dataset_id)
      .executeTakeFirst();
    return Dataset.fromPartial({
      name: resourceName("datasets", row.dataset_id),
      displayName: row.display_name,
      description: row.description,
      labels: row.labels,
      createTime: row.create_time,
      updateTime: row.update_time,
      latestVersion: stats?.latest ? versionName(row.dataset_id, stats.latest) : "",
      versionCount: stats?.n ?? 0,
    });
  }

  async createDataset(tenant: string, req: CreateDatasetRequest): Promise<Dataset> {
    const id = checkResourceId("dataset_id", req.datasetId);
    const d = req.dataset;
    const requestId = checkRequestId("request_id", req.requestId);
    const request = createDatasetRequest(req);
    const values = {
      tenant,
      dataset_id: id,
      display_name: checkCleanText("dataset.display_name", checkText("dataset.display_name", d?.displayName ?? "", 200)) || id,
      description: checkCleanText("dataset.description", checkText("dataset.description", d?.description ?? "", 2000)),
      labels: JSON.stringify(checkCleanLabels("dataset.labels", checkLabels("dataset.labels", d?.labels ?? {}))),
      request_id: requestId,
      request_json: requestId === null ? null : JSON.stringify(request),
    };
    const inserted = await this.t.insertInto("datasets").values(values).onConflict((oc) => oc.doNothing()).returningAll().executeTakeFirst();
    if (inserted) return this.toDataset(inserted);
    if (requestId !== null) {
      const earlier = await this.t.selectFrom("datasets").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
      if (earlier) {
        // The same id and the same request is a retry; anything else is a reused id, never the old dataset.
        // A dataset made before requests were stored can only be compared by its id.
        const before = (earlier.request_json as CanonicalRequest | null) ?? { dataset_id: earlier.dataset_id };
        checkSameRequest(requestId, resourceName("datasets", earlier.dataset_id), before, earlier.request_json === null ? { dataset_id: id } : request);
        return this.toDataset(earlier);
      }
    }
    throw new AppError("ALREADY_EXISTS", "DATASET_ALREADY_EXISTS", `datasets/${id} already exists`, { name: resourceName("datasets", id) });
  }

  async datasetRecord(tenant: string, field: string, name: string): Promise<DatasetRowRecord> {
    const id = parseName(field, name, "datasets");
    const row = await this.t.selectFrom("datasets").selectAll().where("tenant", "=", tenant).where("dataset_id", "=", id).executeTakeFirst();
    if (!row) throw notFound("dataset", name);
    return row;
  }

  async getDataset(tenant: string, name: string): Promise<Dataset> {
    return this.toDataset(await this.datasetRecord(tenant, "name", name));
  }

  async listDatasets(tenant: string, req: { pageSize: number; pageToken: string }): Promise<{ datasets: Dataset[]; nextPageToken: string }> {
    const { rows, nextPageToken } = await paginate({
      scope: ["dataset.datasets", tenant],
      request: req,
      shape: isSeq,
      fetch: (after, limit) => {
        let q = this.t.selectFrom("datasets").selectAll().where("tenant", "=", tenant);
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { datasets: await Promise.all(rows.map((r) => this.toDataset(r))), nextPageToken };
  }

  /** Deletes a dataset; one with versions only with `force`, which deletes them and their rows too. */
  async deleteDataset(tenant: string, name: string, force: boolean): Promise<void> {
    const d = await this.datasetRecord(tenant, "name", name);
    await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      const versions = await t.selectFrom("versions").select(["version_key", "version_id"]).where("tenant", "=", tenant).where("dataset_id", "=", d.dataset_id).execute();
      if (versions.length > 0 && !force) {
        throw new AppError("FAILED_PRECONDITION", "DATASET_HAS_VERSIONS", `${name} has ${versions.length} version(s) (${versions.slice(0, 5).map((v) => v.version_id).join(", ")}); delete with force to remove them too`, { name });
      }
      if (versions.length > 0) {
        const keys = versions.map((v) => v.version_key);
        await t.deleteFrom("rows").where("version_key", "in", keys).execute();
        await t.deleteFrom("versions").where("version_key", "in", keys).execute();
      }
      await t.deleteFrom("datasets").where("tenant", "=", tenant).where("dataset_id", "=", d.dataset_id).execute();
    });
  }

  private toEntry(r: VersionRecord): VersionEntry {
    const name = versionName(r.dataset_id, r.version_id);
    const version = DatasetVersion.fromJSON({ ...(r.meta as object), name });
    version.createTime = r.create_time;
    version.updateTime = r.create_time;
    return { key: r.version_key, datasetId: r.dataset_id, versionId: r.version_id, version, report: QualityReport.fromJSON(r.report), request: (r.request_json as CanonicalRequest | null) ?? null };
  }

  async version(tenant: string, field: string, name: string): Promise<VersionEntry> {
    const [datasetId, versionId] = parseNestedName(field, name, ["datasets", "versions"]) as [string, string];
    const r = await this.t.selectFrom("versions").selectAll().where("tenant", "=", tenant).where("dataset_id", "=", datasetId).where("version_id", "=", versionId).executeTakeFirst();
    if (!r) throw notFound("dataset_version", name);
    return this.toEntry(r);
  }

  async versionByRequestId(tenant: string, datasetId: string, requestId: string): Promise<VersionEntry | undefined> {
    const r = await this.t.selectFrom("versions").selectAll().where("tenant", "=", tenant).where("dataset_id", "=", datasetId).where("request_id", "=", requestId).executeTakeFirst();
    return r ? this.toEntry(r) : undefined;
  }

  async listVersions(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ datasetVersions: DatasetVersion[]; nextPageToken: string }> {
    const d = await this.datasetRecord(tenant, "parent", req.parent);
    const { rows, nextPageToken } = await paginate({
      scope: ["dataset.versions", tenant, req.parent],
      request: req,
      shape: isSeq,
      fetch: (after, limit) => {
        let q = this.t.selectFrom("versions").selectAll().where("tenant", "=", tenant).where("dataset_id", "=", d.dataset_id);
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { datasetVersions: rows.map((r) => this.toEntry(r).version), nextPageToken };
  }

  /**
   * The next version id of a dataset: v1, v2, … after the highest taken, so ids stay dense. A
   * split's pair (`v3-train`, `v3-eval`) takes one number; named versions take none; a failed
   * upload or derivation stores nothing and so takes none either.
   */
  async nextVersionId(tenant: string, datasetId: string): Promise<string> {
    const r = await this.t
      .selectFrom("versions")
      .select(sql<number>`coalesce(max(substring(version_id from '^v([0-9]{1,9})(?:-train|-eval)?$')::int), 0)`.as("n"))
      .where("tenant", "=", tenant)
      .where("dataset_id", "=", datasetId)
      .executeTakeFirst();
    for (let n = (r?.n ?? 0) + 1; ; n++) {
      const taken = await this.t.selectFrom("versions").select("version_id").where("tenant", "=", tenant).where("dataset_id", "=", datasetId).where("version_id", "=", `v${n}`).executeTakeFirst();
      if (!taken) return `v${n}`;
    }
  }

  /** Starts staging rows for a version that does not exist yet. */
  async beginStaging(): Promise<{ key: string; sink: RowSink; heartbeat(): Promise<void> }> {
    const key = randomUUID();
    await this.t.insertInto("staging").values({ version_key: key }).execute();
    const sink: RowSink = {
      write: async (rows: readonly StoredRow[]) => {
        await this.t
          .insertInto("rows")
          .values(rows.map((r) => ({ version_key: key, idx: r.idx, line: r.line, messages: JSON.stringify(r.messages), failed_checks: r.failedChecks, token_count: r.tokenCount })))
          .execute()
          .catch((err: unknown) => {
            throw withoutContent(err);
          });
      },
      markFailed: async (idx: readonly number[], check: DataCheck) => {
        await this.t
          .updateTable("rows")
          .set({ failed_checks: sql`array_append(failed_checks, ${check}::int)` })
          .where("version_key", "=", key)
          .where("idx", "in", [...idx])
          .execute();
      },
    };
    return { key, sink, heartbeat: async () => void (await this.t.updateTable("staging").set({ heartbeat: sql`now()` }).where("version_key", "=", key).execute()) };
  }

  /** Whether any version (of any tenant) keeps this artifact. */
  async isArtifactReferenced(digest: string): Promise<boolean> {
    const r = await this.t.selectFrom("versions").select("version_key").where(sql<string>`meta->>'artifactDigest'`, "=", digest).limit(1).executeTakeFirst();
    return r !== undefined;
  }

  /** Removes what a failed upload or derivation staged. */
  async abortStaging(key: string): Promise<void> {
    await this.t.deleteFrom("rows").where("version_key", "=", key).execute();
    await this.t.deleteFrom("staging").where("version_key", "=", key).execute();
  }

  /** Removes rows staged by uploads whose process died (no heartbeat for `staleMs`). */
  async sweepStaging(staleMs: number): Promise<number> {
    const stale = await this.t.selectFrom("staging").select("version_key").where("heartbeat", "<", sql<Date>`now() - make_interval(secs => ${staleMs / 1000})`).execute();
    for (const s of stale) await this.abortStaging(s.version_key);
    return stale.length;
  }

  /**
   * Makes staged versions visible, with their events, in one transaction: until this commits no
   * reader sees them; after it, they are complete.
   */
  async finalize(
    tenant: string,
    versions: readonly { key: string; datasetId: string; versionId: string; meta: DatasetVersion; report: QualityReport; requestId: string | null; request?: CanonicalRequest }[],
    events: (trx: Transaction<DatasetTables>) => NewEvent<never>[],
  ): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      for (const v of versions) {
        const exists = await t.selectFrom("datasets").select("dataset_id").where("tenant", "=", tenant).where("dataset_id", "=", v.datasetId).executeTakeFirst();
        if (!exists) throw notFound("dataset", resourceName("datasets", v.datasetId));
        const inserted = await t
          .insertInto("versions")
          .values({
            version_key: v.key,
            tenant,
            dataset_id: v.datasetId,
            version_id: v.versionId,
            meta: JSON.stringify(DatasetVersion.toJSON(v.meta)),
            report: JSON.stringify(QualityReport.toJSON(v.report)),
            request_id: v.requestId,
            request_json: v.requestId === null || v.request === undefined ? null : JSON.stringify(v.request),
          })
          .onConflict((oc) => oc.doNothing())
          .returning("version_key")
          .executeTakeFirst();
        if (!inserted && v.requestId !== null) {
          const earlier = await t.selectFrom("versions").selectAll().where("tenant", "=", tenant).where("dataset_id", "=", v.datasetId).where("request_id", "=", v.requestId).executeTakeFirst();
          if (earlier) throw new RequestReplayed(this.toEntry(earlier));
        }
        if (!inserted) throw new AppError("ALREADY_EXISTS", "DATASET_VERSION_ALREADY_EXISTS", `${versionName(v.datasetId, v.versionId)} already exists`, { name: versionName(v.datasetId, v.versionId) });
        await t.deleteFrom("staging").where("version_key", "=", v.key).execute();
        await t.updateTable("datasets").set({ update_time: sql`now()` }).where("tenant", "=", tenant).where("dataset_id", "=", v.datasetId).execute();
      }
      await enqueueEvents(trx, schema, source, events(trx));
    }).catch((err: unknown) => {
      throw withoutContent(err);
    });
    this.onEvents();
  }

  /** Rows of a version in order, from `offset`, at most `limit`. */
  async rows(key: string, opts: { offset: number; limit: number; failingOnly?: boolean }): Promise<StoredRow[]> {
    let q = this.t.selectFrom("rows").selectAll().where("version_key", "=", key);
    // Row indexes are dense (0, 1, 2, …), so a plain offset is a key range and costs nothing;
    // among failing rows only it is a real offset.
    if (opts.failingOnly) q = q.where(sql<boolean>`cardinality(failed_checks) > 0`).offset(opts.offset);
    else q = q.where("idx", ">=", opts.offset);
    const rows = await q.orderBy("idx").limit(opts.limit).execute();
    return rows.map((r) => ({ idx: r.idx, line: r.line, messages: r.messages as StoredRow["messages"], failedChecks: r.failed_checks as DataCheck[], tokenCount: r.token_count }));
  }
}
