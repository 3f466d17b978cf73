import { invalidArgument } from "@lathe/kit";
import { sql, type Kysely, type Transaction } from "kysely";
import { LineageDirection, LineageRelation, ResourceKind, type GetLineageRequest, type GetLineageResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import type { RegistryTables } from "../db/migrations.js";

const schema = "registry";

/** The kind of a resource, from the shape of its name. */
export function kindOf(name: string): ResourceKind {
  const p = name.split("/");
  if (p[0] === "models" && p.length === 2) return ResourceKind.RESOURCE_KIND_MODEL;
  if (p[0] === "models" && p[2] === "adapters" && p[4] === "versions" && p.length === 6) return ResourceKind.RESOURCE_KIND_ADAPTER_VERSION;
  if (p[0] === "models" && p[2] === "adapters" && p[4] === "aliases" && p.length === 6) return ResourceKind.RESOURCE_KIND_ALIAS;
  if (p[0] === "datasets" && p[2] === "versions" && p.length === 4) return ResourceKind.RESOURCE_KIND_DATASET_VERSION;
  if (p[0] === "generationJobs" && p.length === 2) return ResourceKind.RESOURCE_KIND_GENERATION_JOB;
  if (p[0] === "fineTuningJobs" && p.length === 2) return ResourceKind.RESOURCE_KIND_FINE_TUNING_JOB;
  if (p[0] === "fineTuningJobs" && p[2] === "checkpoints" && p.length === 4) return ResourceKind.RESOURCE_KIND_CHECKPOINT;
  if (p[0] === "evaluationRuns" && p.length === 2) return ResourceKind.RESOURCE_KIND_EVALUATION_RUN;
  if (p[0] === "deployments" && p.length === 2) return ResourceKind.RESOURCE_KIND_DEPLOYMENT;
  return ResourceKind.RESOURCE_KIND_UNSPECIFIED;
}

/** The relation of an edge from `source` into `target`, by their kinds. */
export function relationOf(source: string, target: string): LineageRelation {
  const s = kindOf(source);
  const t = kindOf(target);
  if (t === ResourceKind.RESOURCE_KIND_ADAPTER_VERSION && s === ResourceKind.RESOURCE_KIND_MODEL) return LineageRelation.LINEAGE_RELATION_BASE_MODEL;
  if (t === ResourceKind.RESOURCE_KIND_EVALUATION_RUN && s === ResourceKind.RESOURCE_KIND_ADAPTER_VERSION) return LineageRelation.LINEAGE_RELATION_EVALUATED;
  if (t === ResourceKind.RESOURCE_KIND_ALIAS) return LineageRelation.LINEAGE_RELATION_ALIASED;
  if (t === ResourceKind.RESOURCE_KIND_DEPLOYMENT) return LineageRelation.LINEAGE_RELATION_SERVED;
  if (s === ResourceKind.RESOURCE_KIND_FINE_TUNING_JOB || s === ResourceKind.RESOURCE_KIND_CHECKPOINT) return LineageRelation.LINEAGE_RELATION_OUTPUT;
  if (t === ResourceKind.RESOURCE_KIND_FINE_TUNING_JOB || t === ResourceKind.RESOURCE_KIND_EVALUATION_RUN) return LineageRelation.LINEAGE_RELATION_INPUT;
  return LineageRelation.LINEAGE_RELATION_DERIVED;
}

/**
 * Records a node and the edges from each of its inputs to it. Idempotent: the same event applied
 * again adds nothing. Inputs seen for the first time get a node of their own.
 */
export async function recordLineage(
  trx: Transaction<RegistryTables> | Kysely<RegistryTables>,
  tenant: string,
  node: { name: string; displayName?: string; digest?: string; time: Date },
  inputs: readonly string[],
): Promise<void> {
  const t = trx.withSchema(schema);
  const upsert = (name: string, displayName: string, digest: string, time: Date) =>
    t
      .insertInto("lineage_nodes")
      .values({ tenant, name, kind: kindOf(name), display_name: displayName, digest, create_time: time })
      .onConflict((oc) =>
        oc.columns(["tenant", "name"]).doUpdateSet({
          // A node first seen as an input learns its details when its own event arrives.
          display_name: sql`case when excluded.display_name <> '' then excluded.display_name else lineage_nodes.display_name end`,
          digest: sql`case when excluded.digest <> '' then excluded.digest else lineage_nodes.digest end`,
        }),
      )
      .execute();
  await upsert(node.name, node.displayName ?? "", node.digest ?? "", node.time);
  for (const input of inputs) {
    if (input === "" || input === node.name) continue;
    await t.insertInto("lineage_nodes").values({ tenant, name: input, kind: kindOf(input), display_name: "", digest: "", create_time: node.time }).onConflict((oc) => oc.doNothing()).execute();
    await t.insertInto("lineage_edges").values({ tenant, source: input, target: node.name, relation: relationOf(input, node.name) }).onConflict((oc) => oc.doNothing()).execute();
  }
}

/** GetLineage: a breadth-first walk up, down or both ways from a node, to a depth. */
export async function getLineage(db: Kysely<RegistryTables>, tenant: string, req: GetLineageRequest): Promise<GetLineageResponse> {
  if (req.name === "") throw invalidArgument("name", "is required");
  if (kindOf(req.name) === ResourceKind.RESOURCE_KIND_UNSPECIFIED) throw invalidArgument("name", `${JSON.stringify(req.name)} is not the name of a resource lineage knows`);
  if (req.depth < 0 || req.depth > 20) throw invalidArgument("depth", "must be from 1 to 20 (0 means 5)");
  const depth = req.depth || 5;
  const up = req.direction !== LineageDirection.LINEAGE_DIRECTION_DOWNSTREAM;
  const down = req.direction !== LineageDirection.LINEAGE_DIRECTION_UPSTREAM;
  const t = db.withSchema(schema);
  const seen = new Set([req.name]);
  const edges = new Map<string, { source: string; target: string; relation: number }>();
  let frontier = [req.name];
  let truncated = false;
  for (let d = 0; d < depth && frontier.length > 0; d++) {
    const next: string[] = [];
    const found = await t
      .selectFrom("lineage_edges")
      .selectAll()
      .where("tenant", "=", tenant)
      .where((eb) => eb.or([...(up ? [eb("target", "in", frontier)] : []), ...(down ? [eb("source", "in", frontier)] : [])]))
      .execute();
    for (const e of found) {
      const fromFrontier = (up && frontier.includes(e.target)) || (down && frontier.includes(e.source));
      if (!fromFrontier) continue;
      edges.set(`${e.source}\u0000${e.target}\u0000${e.relation}`, e);
      for (const n of [e.source, e.target]) {
        if (seen.has(n)) continue;
        if (seen.size >= 1000) {
          truncated = true;
          continue;
        }
        seen.add(n);
        next.push(n);
      }
    }
    frontier = next;
  }
  const nodes = await t.selectFrom("lineage_nodes").selectAll().where("tenant", "=", tenant).where("name", "in", [...seen]).execute();
  const byName = new Map(nodes.map((n) => [n.name, n]));
  return {
    nodes: [...seen].map((name) => {
      const n = byName.get(name);
      return { name, kind: kindOf(name), displayName: n?.display_name ?? "", createTime: n?.create_time, digest: n?.digest ?? "" };
    }),
    edges: [...edges.values()].filter((e) => seen.has(e.source) && seen.has(e.target)).map((e) => ({ source: e.source, target: e.target, relation: e.relation })),
    truncated,
  };
}
