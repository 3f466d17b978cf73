import { type ColumnType, type Generated, type Kysely } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The gateway schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_deployments": async (db) => {
    // `spec` holds what the caller set (DeploymentSpec); `served` what the rollout resolved
    // (each adapter's version now); `generation` counts spec and alias changes, so a rollout
    // that finishes after a newer change does not mark the deployment ready.
    await withResourceColumns(
      db.schema.createTable("deployments").addColumn("tenant", "text", (c) => c.notNull()).addColumn("deployment_id", "text", (c) => c.notNull()),
    )
      .addColumn("request_body", "jsonb")
      .addColumn("served_model_name", "text", (c) => c.notNull())
      .addColumn("spec", "jsonb", (c) => c.notNull())
      .addColumn("served", "jsonb", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("error", "jsonb")
      .addColumn("generation", "integer", (c) => c.notNull().defaultTo(1))
      .addColumn("rolled_out", "integer", (c) => c.notNull().defaultTo(0))
      .addPrimaryKeyConstraint("deployments_pk", ["tenant", "deployment_id"])
      .addUniqueConstraint("deployments_served_model_name", ["tenant", "served_model_name"])
      .addUniqueConstraint("deployments_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("deployments_list").on("deployments").columns(["tenant", "seq"]).execute();
  },
};

export type DeploymentState = "CREATING" | "READY" | "UPDATING" | "FAILED";
export type BackendKind = "embedded" | "upstream";

/** One adapter of a deployment as the caller set it. */
export interface SpecAdapter {
  /** `models/{m}/adapters/{a}/aliases/{alias}` or `…/versions/{n}`. */
  source: string;
  servedName: string;
}

/** What the caller set: every field of a Deployment that is not the server's. */
export interface DeploymentSpec {
  displayName: string;
  labels: Record<string, string>;
  baseModel: string;
  servedModelName: string;
  adapters: SpecAdapter[];
  backend: BackendKind;
  upstreamBaseUrl: string;
  upstreamApiKeySecret: string;
  upstreamModel: string;
  replicas: number;
  /** 0: the default (4096, or the model's context when shorter). */
  contextLength: number;
}

/** What a rollout resolved: the base model's files and each adapter's version now. */
export interface ServedState {
  baseDigest: string;
  contextLength: number;
  adapters: { servedName: string; source: string; version: string; digest: string; rank: number; chatTemplateFingerprint: string }[];
}

export interface DeploymentsTable {
  tenant: string;
  deployment_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  request_body: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
  served_model_name: string;
  spec: ColumnType<DeploymentSpec, string, string>;
  served: ColumnType<ServedState, string, string>;
  state: DeploymentState;
  error: ColumnType<{ code: string; reason: string; message: string } | null, string | null, string | null>;
  generation: Generated<number>;
  rolled_out: Generated<number>;
}

export interface GatewayTables {
  deployments: DeploymentsTable;
}
