import {
  AppError,
  badFilter,
  canonicalJson,
  checkRequestId,
  checkSameRequest,
  enqueueEvents,
  labelFilterTerm,
  notFound,
  paginate,
  quoteFilterValue,
  readFilter,
  resourceName,
  type Logger,
} from "@lathe/kit";
import { Deployment, Deployment_State, DeploymentBackend, type CreateDeploymentRequest, type UpdateDeploymentRequest } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { sql, type Kysely, type Selectable, type Transaction } from "kysely";
import type { DeploymentSpec, DeploymentState, DeploymentsTable, GatewayTables, ServedState } from "../db/migrations.js";
import { deploymentDeleted, deploymentUpdated } from "../events.js";
import { backendNames, checkDeploymentId, deploymentOfSpec, etagOf, parseDeploymentName, specOf, updatedSpec } from "./spec.js";

export const schema = "gateway";
const source = "gateway";

type Row = Selectable<DeploymentsTable>;

const states: Record<DeploymentState, Deployment_State> = {
  CREATING: Deployment_State.STATE_CREATING,
  READY: Deployment_State.STATE_READY,
  UPDATING: Deployment_State.STATE_UPDATING,
  FAILED: Deployment_State.STATE_FAILED,
};

/** A stored deployment as the API shows it. */
export function toDeployment(r: Row): Deployment {
  const served = new Map(r.served.adapters.map((a) => [a.servedName, a.version]));
  return Deployment.fromPartial({
    ...deploymentOfSpec(r.spec),
    name: resourceName("deployments", r.deployment_id),
    adapters: r.spec.adapters.map((a) => ({ source: a.source, servedName: a.servedName, adapterVersion: served.get(a.servedName) ?? "" })),
    createTime: r.create_time,
    updateTime: r.update_time,
    state: states[r.state],
    error: r.error ?? undefined,
    // 0 (the default) shows as what it resolved to.
    contextLength: r.spec.contextLength || r.served.contextLength,
    etag: etagOf(r.spec),
  });
}

/** The `deployment_updated` event of a row. */
export function updatedEvent(r: Pick<Row, "tenant" | "deployment_id" | "spec" | "served" | "state" | "error">) {
  const name = resourceName("deployments", r.deployment_id);
  return {
    def: deploymentUpdated,
    tenant: r.tenant,
    subject: name,
    payload: {
      deployment: name,
      baseModel: r.spec.baseModel,
      servedModelName: r.spec.servedModelName,
      adapters: r.served.adapters.map((a) => ({ modelId: `${r.spec.servedModelName}:${a.servedName}`, source: a.source, adapterVersion: a.version })),
      ready: r.state === "READY",
      ...(r.error ? { error: { ...r.error, metadata: {} } } : {}),
    },
  };
}

/** What ListDeployments filters on. */
type Term = { op: "=" | "!="; column: "state" | "backend" | "base_model"; value: string } | { op: "=" | "!="; column: "labels"; label: string; value: string };

const STATE_NAMES = Object.fromEntries(Object.entries(states).map(([k, v]) => [Deployment_State[v], k]));
const BACKEND_NAMES = Object.fromEntries(Object.entries(backendNames).map(([k, v]) => [DeploymentBackend[v], k]));

function parseDeploymentFilter(filter: string): Term[] {
  return readFilter(filter).map((t): Term => {
    if (t.field === "state" || t.field === "backend") {
      const names = t.field === "state" ? STATE_NAMES : BACKEND_NAMES;
      const value = t.bare === undefined ? undefined : names[t.bare];
      if (value === undefined) throw badFilter(`${t.field} takes an enum value name: ${Object.keys(names).join(", ")}`);
      return { op: t.op, column: t.field, value };
    }
    if (t.field === "base_model") {
      if (t.quoted === undefined) throw badFilter("base_model takes a string in double quotes");
      return { op: t.op, column: "base_model", value: t.quoted };
    }
    if (t.field.startsWith("labels.")) return { op: t.op, column: "labels", ...labelFilterTerm(t) };
    throw badFilter(`cannot filter on ${quoteFilterValue(t.field)}; use state, backend, base_model or labels.<key>`);
  });
}

/** What a stored create request is compared with when its request_id comes again. */
const requestBody = (req: CreateDeploymentRequest) =>
  Deployment.toJSON(
    Deployment.fromPartial({
      ...req.deployment,
      adapters: (req.deployment?.adapters ?? []).map((a) => ({ ...a, adapterVersion: "" })),
      name: "",
      state: 0,
      createTime: undefined,
      updateTime: undefined,
      error: undefined,
      etag: "",
    }),
  ) as Record<string, unknown>;

/** Checks a spec with the registry, with the caller's credentials, and says what it would serve. */
type Resolve = (spec: DeploymentSpec) => Promise<ServedState>;

/**
 * Deployments: their specs as callers set them, what their last rollout serves, and their
 * `deployment_*` events, written in the same transaction as each change. A spec is checked
 * with the registry (`Resolve`) before it is stored; `onChange` wakes the rollout and the relay.
 */
export class DeploymentStore {
  constructor(
    private readonly db: Kysely<GatewayTables>,
    private readonly onChange: () => void,
    private readonly logger: Logger,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  private async row(tenant: string, field: string, name: string, trx?: Transaction<GatewayTables>): Promise<Row> {
    const id = parseDeploymentName(field, name);
    let q = (trx ?? this.db).withSchema(schema).selectFrom("deployments").selectAll().where("tenant", "=", tenant).where("deployment_id", "=", id);
    if (trx) q = q.forUpdate();
    const r = await q.executeTakeFirst();
    if (!r) throw notFound("deployment", name);
    return r;
  }

  async get(tenant: string, name: string): Promise<Deployment> {
    return toDeployment(await this.row(tenant, "name", name));
  }

  async create(tenant: string, req: CreateDeploymentRequest, resolve: Resolve): Promise<Deployment> {
    const id = checkDeploymentId("deployment_id", req.deploymentId);
    const requestId = checkRequestId("request_id", req.requestId);
    const spec = specOf(req.deployment);
    const body = requestBody(req);
    const name = resourceName("deployments", id);
    const replay = async (db: Kysely<GatewayTables> | Transaction<GatewayTables>) => {
      if (requestId === null) return undefined;
      const earlier = await db.withSchema(schema).selectFrom("deployments").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
      if (!earlier) return undefined;
      checkSameRequest(requestId, resourceName("deployments", earlier.deployment_id), earlier.request_body ?? {}, { ...body, deployment_id: id });
      return toDeployment(earlier);
    };
    const replayed = await replay(this.db);
    if (replayed) return replayed;
    await this.checkFree(tenant, id, spec.servedModelName);
    const served = await resolve(spec);
    const row = await this.db.transaction().execute(async (trx) => {
      const values = {
        tenant,
        deployment_id: id,
        display_name: spec.displayName,
        description: "",
        labels: JSON.stringify(spec.labels),
        request_id: requestId,
        request_body: requestId === null ? null : canonicalJson({ ...body, deployment_id: id }),
        served_model_name: spec.servedModelName,
        spec: JSON.stringify(spec),
        served: JSON.stringify(served),
        state: "CREATING" as const,
        error: null,
      };
      const inserted = await trx.withSchema(schema).insertInto("deployments").values(values).onConflict((oc) => oc.doNothing()).returningAll().executeTakeFirst();
      if (!inserted) return undefined;
      await enqueueEvents(trx, schema, source, [updatedEvent(inserted)]);
      return inserted;
    });
    if (!row) {
      // A concurrent create won: the same request_id is the same deployment, anything else a conflict.
      const again = await replay(this.db);
      if (again) return again;
      await this.checkFree(tenant, id, spec.servedModelName);
      throw new AppError("ABORTED", "CONCURRENT_CREATE", `${name} was created concurrently; retry`, { name });
    }
    this.onChange();
    return toDeployment(row);
  }

  /** ALREADY_EXISTS when the id or the served model name is taken in the tenant. */
  private async checkFree(tenant: string, id: string, servedModelName: string, except?: string): Promise<void> {
    const taken = await this.t
      .selectFrom("deployments")
      .select(["deployment_id", "served_model_name"])
      .where("tenant", "=", tenant)
      .where((eb) => eb.or([eb("deployment_id", "=", id), eb("served_model_name", "=", servedModelName)]))
      .execute();
    for (const r of taken) {
      if (r.deployment_id === except) continue;
      if (r.deployment_id === id) throw new AppError("ALREADY_EXISTS", "DEPLOYMENT_ALREADY_EXISTS", `deployments/${id} already exists`, { name: resourceName("deployments", id) });
      throw new AppError("ALREADY_EXISTS", "SERVED_MODEL_NAME_TAKEN", `deployment.served_model_name: ${servedModelName} is already served by deployments/${r.deployment_id}`, { field: "deployment.served_model_name" });
    }
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string; filter: string }): Promise<{ deployments: Deployment[]; nextPageToken: string }> {
    const terms = parseDeploymentFilter(req.filter);
    const { rows, nextPageToken } = await paginate({
      scope: ["gateway.deployments", tenant, req.filter],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("deployments").selectAll().where("tenant", "=", tenant);
        for (const term of terms) {
          const value =
            term.column === "labels" ? sql<string>`labels ->> ${term.label}` : term.column === "base_model" ? sql<string>`spec ->> 'baseModel'` : term.column === "backend" ? sql<string>`spec ->> 'backend'` : sql<string>`state`;
          // A missing label is not equal to any value, and differs from every value.
          q = term.op === "=" ? q.where(value, "=", term.value) : q.where((eb) => eb.or([eb(value, "is", null), eb(value, "!=", term.value)]));
        }
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { deployments: rows.map(toDeployment), nextPageToken };
  }

  async update(tenant: string, req: UpdateDeploymentRequest, resolve: Resolve): Promise<Deployment> {
    if (!req.deployment) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "deployment: is required", { field: "deployment" });
    const d = req.deployment;
    const current = await this.row(tenant, "deployment.name", d.name);
    const etag = etagOf(current.spec);
    if (d.etag !== "" && d.etag !== etag) throw new AppError("ABORTED", "ETAG_MISMATCH", `${d.name} changed since etag ${d.etag} (now ${etag}); get it again and retry`, { name: d.name });
    const spec = updatedSpec(current.spec, d, req.updateMask ?? []);
    if (spec.servedModelName !== current.spec.servedModelName) await this.checkFree(tenant, current.deployment_id, spec.servedModelName, current.deployment_id);
    if (etagOf(spec) === etag) return toDeployment(current);
    await resolve(spec);
    const row = await this.db.transaction().execute(async (trx) => {
      const now = await this.row(tenant, "deployment.name", d.name, trx);
      if (etagOf(now.spec) !== etag) throw new AppError("ABORTED", "ETAG_MISMATCH", `${d.name} changed during this update; get it again and retry`, { name: d.name });
      const updated = (await trx
        .withSchema(schema)
        .updateTable("deployments")
        .set({
          display_name: spec.displayName,
          labels: JSON.stringify(spec.labels),
          served_model_name: spec.servedModelName,
          spec: JSON.stringify(spec),
          state: "UPDATING",
          error: null,
          generation: sql`generation + 1`,
          update_time: sql`now()`,
        })
        .where("tenant", "=", tenant)
        .where("deployment_id", "=", now.deployment_id)
        .returningAll()
        .executeTakeFirstOrThrow());
      await enqueueEvents(trx, schema, source, [updatedEvent(updated)]);
      return updated;
    });
    this.onChange();
    return toDeployment(row);
  }

  /** Deletes a deployment and records its `deployment_deleted` event; returns what it served, for the backend to let go of. */
  async delete(tenant: string, name: string, etag: string): Promise<Row> {
    const row = await this.db.transaction().execute(async (trx) => {
      const r = await this.row(tenant, "name", name, trx);
      if (etag !== "" && etag !== etagOf(r.spec)) throw new AppError("ABORTED", "ETAG_MISMATCH", `${name} changed since etag ${etag}; get it again and retry`, { name });
      await trx.withSchema(schema).deleteFrom("deployments").where("tenant", "=", tenant).where("deployment_id", "=", r.deployment_id).execute();
      await enqueueEvents(trx, schema, source, [{ def: deploymentDeleted, tenant, subject: name, payload: { deployment: name, servedModelName: r.spec.servedModelName } }]);
      return r;
    });
    this.onChange();
    return row;
  }

  /** The tenant's deployment serving `servedModelName`, if any. */
  async byServedName(tenant: string, servedModelName: string): Promise<Row | undefined> {
    return (await this.t.selectFrom("deployments").selectAll().where("tenant", "=", tenant).where("served_model_name", "=", servedModelName).executeTakeFirst());
  }

  /** Every deployment of the tenant, oldest first. */
  async all(tenant: string): Promise<Row[]> {
    return (await this.t.selectFrom("deployments").selectAll().where("tenant", "=", tenant).orderBy("seq").execute()) as Row[];
  }

  /** Adds `alias` to a deployment's adapters (a follow-up's deployment), if it is of the deployment's base model and not served yet. */
  private async addAlias(trx: Transaction<GatewayTables>, tenant: string, alias: string, deployment: string): Promise<void> {
    const id = deployment.replace(/^deployments\//, "");
    const row = await trx.withSchema(schema).selectFrom("deployments").selectAll().where("tenant", "=", tenant).where("deployment_id", "=", id).forUpdate().executeTakeFirst();
    const [, modelId, , adapterId, , aliasId] = alias.split("/");
    if (!row) {
      this.logger.warn({ tenant, deployment, alias }, "a promotion asked for a deployment that does not exist; the alias is not served");
      return;
    }
    if (row.spec.adapters.some((a) => a.source === alias)) return;
    if (row.spec.baseModel !== `models/${modelId}`) {
      this.logger.warn({ tenant, deployment, alias, base: row.spec.baseModel }, "a promotion asked for a deployment of another base model; the alias is not served");
      return;
    }
    const taken = new Set(row.spec.adapters.map((a) => a.servedName));
    const servedName = taken.has(adapterId!) ? `${adapterId}-${aliasId}` : adapterId!;
    const spec = { ...row.spec, adapters: [...row.spec.adapters, { source: alias, servedName }] };
    await trx.withSchema(schema).updateTable("deployments").set({ spec: JSON.stringify(spec), update_time: sql`now()` }).where("tenant", "=", tenant).where("deployment_id", "=", id).execute();
  }

  /** Deployments a rollout has to bring to their spec (created, updated, or an alias of theirs moved). */
  async pending(): Promise<Row[]> {
    return (await this.t.selectFrom("deployments").selectAll().where("state", "in", ["CREATING", "UPDATING"]).orderBy("seq").execute()) as Row[];
  }

  /**
   * Marks the deployments serving `alias` for a new rollout (in the transaction of the consumed
   * `alias_moved` event); returns how many. A promotion a fine-tuning job asked for names the
   * deployment that must serve the alias (`deployment`): the alias is added to its adapters first
   * when missing, served under the adapter's id (or `{adapter}-{alias}` when that name is taken).
   */
  async aliasMoved(trx: Transaction<GatewayTables>, tenant: string, alias: string, deployment = ""): Promise<number> {
    if (deployment !== "") await this.addAlias(trx, tenant, alias, deployment);
    const rows = (await trx
      .withSchema(schema)
      .updateTable("deployments")
      .set({ state: "UPDATING", generation: sql`generation + 1`, update_time: sql`now()` })
      .where("tenant", "=", tenant)
      .where(sql<boolean>`spec -> 'adapters' @> ${JSON.stringify([{ source: alias }])}::jsonb`)
      .returningAll()
      .execute()) as Row[];
    if (rows.length > 0) await enqueueEvents(trx, schema, source, rows.map(updatedEvent));
    return rows.length;
  }

  /**
   * Records a rollout's outcome, unless the deployment changed again meanwhile (its generation
   * moved on; the next rollout records instead) or is gone. True when recorded.
   */
  async finishRollout(r: Row, outcome: { served: ServedState } | { error: { code: string; reason: string; message: string } }): Promise<boolean> {
    const done = await this.db.transaction().execute(async (trx) => {
      const updated = (await trx
        .withSchema(schema)
        .updateTable("deployments")
        .set(
          "served" in outcome
            ? { state: "READY", served: JSON.stringify(outcome.served), error: null, rolled_out: r.generation, update_time: sql`now()` }
            : { state: "FAILED", error: JSON.stringify(outcome.error), update_time: sql`now()` },
        )
        .where("tenant", "=", r.tenant)
        .where("deployment_id", "=", r.deployment_id)
        .where("generation", "=", r.generation)
        .returningAll()
        .executeTakeFirst());
      if (updated) await enqueueEvents(trx, schema, source, [updatedEvent(updated)]);
      return updated !== undefined;
    });
    if (done) this.onChange();
    return done;
  }
}

export type DeploymentRow = Row;
