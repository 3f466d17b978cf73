import { sql, type ColumnType, type Generated, type Kysely, type Selectable } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The registry's schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_models": async (db) => {
    await withResourceColumns(
      db.schema.createTable("models").addColumn("tenant", "text", (c) => c.notNull()).addColumn("model_id", "text", (c) => c.notNull()),
    )
      .addColumn("source_uri", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("models_pk", ["tenant", "model_id"])
      .addUniqueConstraint("models_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("models_list").on("models").columns(["tenant", "seq"]).execute();
  },
  "0002_import_adapters_aliases_lineage": async (db) => {
    // What importing a model folder learns of it (libs/models), and where its files are stored.
    await db.schema.alterTable("models").addColumn("import", "jsonb").execute();
    await withResourceColumns(
      db.schema
        .createTable("adapters")
        .addColumn("tenant", "text", (c) => c.notNull())
        .addColumn("model_id", "text", (c) => c.notNull())
        .addColumn("adapter_id", "text", (c) => c.notNull()),
    )
      .addPrimaryKeyConstraint("adapters_pk", ["tenant", "model_id", "adapter_id"])
      .addUniqueConstraint("adapters_request_id", ["tenant", "request_id"])
      .execute();
    // Versions are immutable: `meta` never changes once written. Evaluations attach beside them.
    await db.schema
      .createTable("adapter_versions")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("model_id", "text", (c) => c.notNull())
      .addColumn("adapter_id", "text", (c) => c.notNull())
      .addColumn("version", "integer", (c) => c.notNull())
      .addColumn("meta", "jsonb", (c) => c.notNull())
      .addColumn("artifact_digest", "text", (c) => c.notNull())
      .addColumn("request_id", "text")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("adapter_versions_pk", ["tenant", "model_id", "adapter_id", "version"])
      .addUniqueConstraint("adapter_versions_request_id", ["tenant", "model_id", "adapter_id", "request_id"])
      .execute();
    await db.schema
      .createTable("version_evaluations")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("adapter_version", "text", (c) => c.notNull())
      .addColumn("evaluation_run", "text", (c) => c.notNull())
      .addColumn("metrics", "jsonb", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("version_evaluations_pk", ["tenant", "adapter_version", "evaluation_run"])
      .execute();
    await db.schema
      .createTable("aliases")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("adapter_version", "text", (c) => c.notNull())
      .addColumn("labels", "jsonb", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn("update_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("aliases_pk", ["tenant", "name"])
      .execute();
    await db.schema
      .createTable("alias_moves")
      .addColumn("seq", "bigserial", (c) => c.primaryKey())
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("alias", "text", (c) => c.notNull())
      .addColumn("move", "jsonb", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("alias_moves_by_alias").on("alias_moves").columns(["tenant", "alias", "seq"]).execute();
    await db.schema
      .createTable("promotion_rules")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("rule", "jsonb", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn("update_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("promotion_rules_pk", ["tenant", "name"])
      .execute();
    // The lineage graph, filled from the events of every service.
    await db.schema
      .createTable("lineage_nodes")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("name", "text", (c) => c.notNull())
      .addColumn("kind", "integer", (c) => c.notNull())
      .addColumn("display_name", "text", (c) => c.notNull())
      .addColumn("digest", "text", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull())
      .addPrimaryKeyConstraint("lineage_nodes_pk", ["tenant", "name"])
      .execute();
    await db.schema
      .createTable("lineage_edges")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("source", "text", (c) => c.notNull())
      .addColumn("target", "text", (c) => c.notNull())
      .addColumn("relation", "integer", (c) => c.notNull())
      .addPrimaryKeyConstraint("lineage_edges_pk", ["tenant", "source", "target", "relation"])
      .execute();
    await db.schema.createIndex("lineage_edges_target").on("lineage_edges").columns(["tenant", "target"]).execute();
    // Registrations that finished jobs asked for, done outside the event's transaction (they
    // copy files) by the registration worker; the job name makes them idempotent.
    await db.schema
      .createTable("pending_registrations")
      .addColumn("event_id", "text", (c) => c.primaryKey())
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job", "text", (c) => c.notNull())
      .addColumn("request", "jsonb", (c) => c.notNull())
      .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("last_error", "text")
      .execute();
  },
  "0003_request_bodies": async (db) => {
    // AIP-155: what a request_id was first used for, so a retry that asks for something else is
    // refused (REQUEST_ID_REUSED) instead of answered with the earlier resource.
    for (const table of ["models", "adapters", "adapter_versions"]) await db.schema.alterTable(table).addColumn("request_body", "jsonb").execute();
  },
  "0004_promotion_decisions": async (db) => {
    // Every promotion decision after an evaluation, held ones included, with why (proto JSON of
    // PromotionDecision); one per alias and run, so a redelivered event decides nothing twice.
    await db.schema
      .createTable("promotion_decisions")
      .addColumn("seq", "bigserial", (c) => c.primaryKey())
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("alias", "text", (c) => c.notNull())
      .addColumn("evaluation_run", "text", (c) => c.notNull())
      .addColumn("decision", "jsonb", (c) => c.notNull())
      .addUniqueConstraint("promotion_decisions_once", ["tenant", "alias", "evaluation_run"])
      .execute();
  },
};

/** Row types of the registry's tables. */
export interface ModelsTable {
  tenant: string;
  model_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  source_uri: string;
  /** JSON text on the way in, an object on the way out. */
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  /** The request first sent with `request_id`, as canonical JSON (AIP-155). */
  request_body: ColumnType<unknown, string | null | undefined, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
  /** What the import learned (architecture, sizes, digest), as JSON. */
  import: ColumnType<ModelImport | null, string | null, string | null>;
}

/** What importing a model folder records. */
export interface ModelImport {
  architecture: string;
  modelType: string;
  parameterCount: number;
  vocabSize: number;
  contextLength: number;
  dtype: string;
  chatTemplateFingerprint: string;
  artifactDigest: string;
  sizeBytes: number;
}

export type ModelRow = Selectable<ModelsTable>;

type Json = ColumnType<unknown, string, string>;

export interface RegistryTables {
  models: ModelsTable;
  adapters: {
    tenant: string;
    model_id: string;
    adapter_id: string;
    seq: Generated<number>;
    display_name: string;
    description: string;
    labels: ColumnType<Record<string, string>, string, string>;
    request_id: string | null;
    request_body: ColumnType<unknown, string | null | undefined, string | null>;
    create_time: Generated<Date>;
    update_time: Generated<Date>;
  };
  adapter_versions: {
    tenant: string;
    model_id: string;
    adapter_id: string;
    version: number;
    meta: Json;
    artifact_digest: string;
    request_id: string | null;
    request_body: ColumnType<unknown, string | null | undefined, string | null>;
    create_time: Generated<Date>;
  };
  version_evaluations: { tenant: string; adapter_version: string; evaluation_run: string; metrics: Json; create_time: Generated<Date> };
  aliases: { tenant: string; name: string; adapter_version: string; labels: ColumnType<Record<string, string>, string, string>; seq: Generated<number>; create_time: Generated<Date>; update_time: Generated<Date> };
  alias_moves: { seq: Generated<number>; tenant: string; alias: string; move: Json };
  promotion_decisions: { seq: Generated<number>; tenant: string; alias: string; evaluation_run: string; decision: Json };
  promotion_rules: { tenant: string; name: string; rule: Json; create_time: Generated<Date>; update_time: Generated<Date> };
  lineage_nodes: { tenant: string; name: string; kind: number; display_name: string; digest: string; create_time: Date };
  lineage_edges: { tenant: string; source: string; target: string; relation: number };
  pending_registrations: { event_id: string; tenant: string; job: string; request: Json; attempts: Generated<number>; last_error: string | null };
}
