import { sql, type ColumnType, type Generated, type Kysely, type Selectable } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The dataset schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_datasets": async (db) => {
    await withResourceColumns(db.schema.createTable("datasets").addColumn("tenant", "text", (c) => c.notNull()).addColumn("dataset_id", "text", (c) => c.notNull()))
      .addPrimaryKeyConstraint("datasets_pk", ["tenant", "dataset_id"])
      .addUniqueConstraint("datasets_request_id", ["tenant", "request_id"])
      .execute();
    // A version row exists only once its upload or derivation is complete: that is what makes a
    // version appear atomically. Rows are staged under version_key before it exists.
    await db.schema
      .createTable("versions")
      .addColumn("version_key", "uuid", (c) => c.primaryKey())
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("dataset_id", "text", (c) => c.notNull())
      .addColumn("version_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("meta", "jsonb", (c) => c.notNull())
      .addColumn("report", "jsonb", (c) => c.notNull())
      .addColumn("request_id", "text")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addUniqueConstraint("versions_id", ["tenant", "dataset_id", "version_id"])
      .addUniqueConstraint("versions_request_id", ["tenant", "dataset_id", "request_id"])
      .execute();
    await db.schema
      .createTable("rows")
      .addColumn("version_key", "uuid", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("line", "integer", (c) => c.notNull())
      .addColumn("messages", "jsonb", (c) => c.notNull())
      .addColumn("failed_checks", sql`integer[]`, (c) => c.notNull())
      .addColumn("token_count", "integer", (c) => c.notNull())
      .addPrimaryKeyConstraint("rows_pk", ["version_key", "idx"])
      .execute();
    // Uploads and derivations in progress: their staged rows are removed when they fail, and by a
    // sweep when the process that ran them died (no heartbeat for a while).
    await db.schema
      .createTable("staging")
      .addColumn("version_key", "uuid", (c) => c.primaryKey())
      .addColumn("heartbeat", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .execute();
  },
  // AIP-155: the request that made a dataset or version (requests.ts), so a retry under the same
  // request_id is compared with it. Rows made before this migration have none.
  "0002_request_json": async (db) => {
    await db.schema.alterTable("datasets").addColumn("request_json", "jsonb").execute();
    await db.schema.alterTable("versions").addColumn("request_json", "jsonb").execute();
  },
};

export interface DatasetsTable {
  tenant: string;
  dataset_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  /** The canonical request (requests.ts) when it carried a request_id; null before 0002. */
  request_json: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
}

export interface VersionsTable {
  version_key: string;
  tenant: string;
  dataset_id: string;
  version_id: string;
  seq: Generated<number>;
  /** DatasetVersion as proto JSON, without name and times. */
  meta: ColumnType<unknown, string, string>;
  /** QualityReport as proto JSON. */
  report: ColumnType<unknown, string, string>;
  request_id: string | null;
  /** The canonical request (requests.ts) when it carried a request_id; null before 0002. */
  request_json: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
}

export interface RowsTable {
  version_key: string;
  idx: number;
  line: number;
  messages: ColumnType<{ role: number; content: string }[], string, string>;
  failed_checks: number[];
  token_count: number;
}

export interface StagingTable {
  version_key: string;
  heartbeat: Generated<Date>;
}

export interface DatasetTables {
  datasets: DatasetsTable;
  versions: VersionsTable;
  rows: RowsTable;
  staging: StagingTable;
}

export type DatasetRowRecord = Selectable<DatasetsTable>;
export type VersionRecord = Selectable<VersionsTable>;
