import { AppError, checkResourceId, enqueueEvents, invalidArgument, notFound, paginate, parseNestedName } from "@lathe/kit";
import { sql, type Kysely, type Transaction } from "kysely";
import {
  Alias,
  AliasMove,
  AliasMoveTrigger,
  PromotionDecision,
  PromotionRule,
  type ConditionOutcome,
  type RollbackAliasRequest,
  type SetAliasRequest,
  type SetPromotionRuleRequest,
} from "@lathe/proto/lathe/registry/v1/registry_service";
import type { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import type { MetricCondition, MetricDifference } from "@lathe/proto/lathe/type/v1/metric";
import type { RegistryTables } from "../db/migrations.js";
import { aliasMoved } from "../events.js";
import { adapterName, parseVersionName, type AdapterStore } from "./adapters.js";
import { recordLineage } from "./lineage.js";
import { schema } from "./models.js";

const source = "registry";
const triggerNames: Record<number, string> = { [AliasMoveTrigger.ALIAS_MOVE_TRIGGER_MANUAL]: "manual", [AliasMoveTrigger.ALIAS_MOVE_TRIGGER_PROMOTION]: "promotion", [AliasMoveTrigger.ALIAS_MOVE_TRIGGER_ROLLBACK]: "rollback" };

/** Parses `models/{m}/adapters/{a}/aliases/{alias}`. */
export function parseAliasName(field: string, name: string): { modelId: string; adapterId: string; alias: string; adapter: string } {
  const [modelId, adapterId, alias] = parseNestedName(field, name, ["models", "adapters", "aliases"]) as [string, string, string];
  return { modelId, adapterId, alias: checkResourceId(field, alias), adapter: adapterName(modelId, adapterId) };
}

/**
 * Whether a comparison satisfies one condition: the mean difference reaches `min_delta`, the
 * confidence interval is above zero when required, and the candidate reaches `min_value`.
 */
export function conditionHolds(c: { metric: number; minDelta: number; requireCiAboveZero: boolean; minValue?: number | undefined }, d: MetricDifference | undefined): boolean {
  if (!d) return false;
  if (d.meanDifference < c.minDelta) return false;
  if (c.requireCiAboveZero && !(d.confidenceInterval && d.confidenceInterval.lower > 0)) return false;
  if (c.minValue !== undefined && d.candidateValue < c.minValue) return false;
  return true;
}

/** Aliases of adapter versions, their recorded moves, and the rules that move them. */
export class AliasStore {
  constructor(
    private readonly db: Kysely<RegistryTables>,
    private readonly adapters: AdapterStore,
    private readonly onEvents: () => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  async get(tenant: string, name: string): Promise<Alias> {
    parseAliasName("name", name);
    const r = await this.t.selectFrom("aliases").selectAll().where("tenant", "=", tenant).where("name", "=", name).executeTakeFirst();
    const decisions = await this.t.selectFrom("promotion_decisions").select("decision").where("tenant", "=", tenant).where("alias", "=", name).orderBy("seq").execute();
    if (!r) {
      // Known only by the promotions that did not happen: no version yet, and why not.
      if (decisions.length === 0) throw notFound("alias", name);
      return Alias.fromPartial({ name, adapterVersion: "", decisions: decisions.map((d) => PromotionDecision.fromJSON(d.decision)) });
    }
    const moves = await this.t.selectFrom("alias_moves").select("move").where("tenant", "=", tenant).where("alias", "=", name).orderBy("seq").execute();
    return Alias.fromPartial({
      name,
      adapterVersion: r.adapter_version,
      labels: r.labels as unknown as Record<string, string>,
      createTime: r.create_time,
      updateTime: r.update_time,
      history: moves.map((m) => AliasMove.fromJSON(m.move)),
      decisions: decisions.map((d) => PromotionDecision.fromJSON(d.decision)),
    });
  }

  async list(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ aliases: Alias[]; nextPageToken: string }> {
    await this.adapters.record(tenant, "parent", req.parent);
    const { rows, nextPageToken } = await paginate({
      scope: ["registry.aliases", tenant, req.parent],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("aliases").select(["name", "seq"]).where("tenant", "=", tenant).where("name", "like", `${req.parent}/aliases/%`);
        if (after) q = q.where("seq", ">", after.seq);
        return q.orderBy("seq").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { aliases: await Promise.all(rows.map((r) => this.get(tenant, r.name))), nextPageToken };
  }

  /**
   * Moves an alias (creating it on its first move) and records the move, its `alias_moved`
   * event and its lineage edge in one transaction. `expected` makes it a compare-and-set.
   */
  async move(
    tenant: string,
    name: string,
    to: string,
    m: { trigger: AliasMoveTrigger; reason: string; actor: string; evaluationRun?: string; decidingMetrics?: ConditionOutcome[]; expected?: string; deployment?: string },
    trx?: Transaction<RegistryTables>,
  ): Promise<void> {
    const run = async (trx: Transaction<RegistryTables>) => {
      const t = trx.withSchema(schema);
      const current = await t.selectFrom("aliases").select("adapter_version").where("tenant", "=", tenant).where("name", "=", name).forUpdate().executeTakeFirst();
      const from = current?.adapter_version ?? "";
      if (m.expected !== undefined && m.expected !== "" && m.expected !== from) {
        throw new AppError("ABORTED", "ALIAS_MOVED_CONCURRENTLY", `${name} points at ${from || "nothing"}, not ${m.expected}`, { name });
      }
      if (current) await t.updateTable("aliases").set({ adapter_version: to, update_time: sql`now()` }).where("tenant", "=", tenant).where("name", "=", name).execute();
      else await t.insertInto("aliases").values({ tenant, name, adapter_version: to, labels: "{}" }).execute();
      const move = AliasMove.fromPartial({ fromVersion: from, toVersion: to, moveTime: new Date(), trigger: m.trigger, reason: m.reason, actor: m.actor, evaluationRun: m.evaluationRun ?? "", decidingMetrics: m.decidingMetrics ?? [] });
      await t.insertInto("alias_moves").values({ tenant, alias: name, move: JSON.stringify(AliasMove.toJSON(move)) }).execute();
      await enqueueEvents(trx, schema, source, [
        { def: aliasMoved, tenant, subject: name, payload: { alias: name, fromVersion: from, toVersion: to, trigger: triggerNames[m.trigger] ?? "", reason: m.reason, actor: m.actor, evaluationRun: m.evaluationRun ?? "", deployment: m.deployment ?? "" } },
      ]);
      await recordLineage(trx, tenant, { name, displayName: name, time: new Date() }, [to]);
    };
    if (trx) await run(trx);
    else await this.db.transaction().execute(run);
    this.onEvents();
  }

  async set(tenant: string, req: SetAliasRequest): Promise<Alias> {
    const a = parseAliasName("name", req.name);
    const v = parseVersionName("adapter_version", req.adapterVersion);
    if (adapterName(v.modelId, v.adapterId) !== a.adapter) throw invalidArgument("adapter_version", `${req.adapterVersion} is not a version of ${a.adapter}`);
    await this.adapters.versionRecord(tenant, "adapter_version", req.adapterVersion);
    await this.move(tenant, req.name, req.adapterVersion, { trigger: AliasMoveTrigger.ALIAS_MOVE_TRIGGER_MANUAL, reason: req.reason, actor: `tenant:${tenant}`, expected: req.expectedAdapterVersion });
    return this.get(tenant, req.name);
  }

  /** Moves an alias back: to `adapter_version` when given, else to where its last move came from. */
  async rollback(tenant: string, req: RollbackAliasRequest): Promise<Alias> {
    const alias = await this.get(tenant, req.name);
    let to = req.adapterVersion;
    if (to === "") {
      const last = alias.history[alias.history.length - 1];
      if (!last || last.fromVersion === "") throw new AppError("FAILED_PRECONDITION", "NOTHING_TO_ROLL_BACK", `${req.name} has no earlier version to go back to`, { name: req.name });
      to = last.fromVersion;
    } else {
      if (!alias.history.some((h) => h.toVersion === to)) throw invalidArgument("adapter_version", `${req.name} never pointed at ${to}`);
    }
    await this.adapters.versionRecord(tenant, "adapter_version", to);
    await this.move(tenant, req.name, to, { trigger: AliasMoveTrigger.ALIAS_MOVE_TRIGGER_ROLLBACK, reason: req.reason, actor: `tenant:${tenant}` });
    return this.get(tenant, req.name);
  }

  async setRule(tenant: string, req: SetPromotionRuleRequest): Promise<PromotionRule> {
    const rule = req.promotionRule;
    if (!rule) throw invalidArgument("promotion_rule", "is required");
    if (!rule.name.endsWith("/promotionRule")) throw invalidArgument("promotion_rule.name", "must look like models/{m}/adapters/{a}/aliases/{alias}/promotionRule");
    const a = parseAliasName("promotion_rule.name", rule.name.slice(0, -"/promotionRule".length));
    await this.adapters.record(tenant, "promotion_rule.name", a.adapter);
    if (rule.conditions.length === 0) throw invalidArgument("promotion_rule.conditions", "needs at least one condition");
    for (const [i, c] of rule.conditions.entries()) if (c.metric === 0) throw invalidArgument(`promotion_rule.conditions[${i}].metric`, "is required");
    if (rule.minExampleCount < 0) throw invalidArgument("promotion_rule.min_example_count", "must not be negative");
    const stored = PromotionRule.fromPartial({ ...rule, createTime: undefined, updateTime: undefined });
    await this.t
      .insertInto("promotion_rules")
      .values({ tenant, name: rule.name, rule: JSON.stringify(PromotionRule.toJSON(stored)) })
      .onConflict((oc) => oc.columns(["tenant", "name"]).doUpdateSet({ rule: JSON.stringify(PromotionRule.toJSON(stored)), update_time: sql`now()` }))
      .execute();
    return this.getRule(tenant, rule.name);
  }

  async getRule(tenant: string, name: string): Promise<PromotionRule> {
    const r = await this.t.selectFrom("promotion_rules").selectAll().where("tenant", "=", tenant).where("name", "=", name).executeTakeFirst();
    if (!r) throw notFound("promotion_rule", name);
    const rule = PromotionRule.fromJSON(r.rule);
    rule.createTime = r.create_time;
    rule.updateTime = r.update_time;
    return rule;
  }

  /**
   * Applies the promotion rules of the candidate's adapter to a finished evaluation: each alias
   * whose rule holds moves to the candidate, and the move records the numbers that decided it.
   * A fine-tuning job's follow-up promotion names one alias, with conditions that replace that
   * alias's stored rule (none: the stored rule applies), and a deployment that must then serve
   * the alias (named in the move's `alias_moved`). Every decision, held or not, is recorded with
   * why, once per alias and run. Returns the aliases moved and those whose rule did not hold.
   */
  async promote(
    trx: Transaction<RegistryTables>,
    tenant: string,
    e: { evaluationRun: string; candidateAdapterVersion: string; differences: MetricDifference[]; exampleCount: number; fineTuningJob?: string; followUp?: FollowUp | undefined },
  ): Promise<{ moved: string[]; held: { alias: string; outcomes: ConditionOutcome[] }[] }> {
    const v = parseVersionName("candidate_adapter_version", e.candidateAdapterVersion);
    const adapter = adapterName(v.modelId, v.adapterId);
    const stored = await trx.withSchema(schema).selectFrom("promotion_rules").selectAll().where("tenant", "=", tenant).where("name", "like", `${adapter}/aliases/%/promotionRule`).execute();
    const rules = new Map<string, { conditions: MetricCondition[]; minExampleCount: number; source: string }>();
    for (const r of stored) {
      const rule = PromotionRule.fromJSON(r.rule);
      if (!rule.disabled) rules.set(r.name.slice(0, -"/promotionRule".length), { conditions: rule.conditions, minExampleCount: rule.minExampleCount, source: "promotion_rule" });
    }
    const asked = e.followUp?.promotion?.alias ? `${adapter}/aliases/${e.followUp.promotion.alias}` : undefined;
    if (asked !== undefined && e.followUp!.promotion!.conditions.length > 0) rules.set(asked, { conditions: e.followUp!.promotion!.conditions, minExampleCount: 0, source: "follow_up" });
    const moved: string[] = [];
    const held: { alias: string; outcomes: ConditionOutcome[] }[] = [];
    const decide = async (alias: string, d: Omit<PromotionDecision, "evaluationRun" | "candidateVersion" | "fineTuningJob" | "decideTime">): Promise<boolean> => {
      const decision = PromotionDecision.fromPartial({ ...d, evaluationRun: e.evaluationRun, candidateVersion: e.candidateAdapterVersion, fineTuningJob: e.fineTuningJob ?? "", decideTime: new Date() });
      const res = await trx.withSchema(schema).insertInto("promotion_decisions").values({ tenant, alias, evaluation_run: e.evaluationRun, decision: JSON.stringify(PromotionDecision.toJSON(decision)) }).onConflict((oc) => oc.doNothing()).executeTakeFirst();
      return Number(res.numInsertedOrUpdatedRows ?? 0n) === 1;
    };
    if (asked !== undefined && !rules.has(asked)) {
      await decide(asked, { promoted: false, reason: `the job asked to promote to ${asked} but gave no conditions, and the alias has no promotion rule: set one (SetPromotionRule) or give follow_up.promotion.conditions`, outcomes: [], source: "follow_up" });
      held.push({ alias: asked, outcomes: [] });
    }
    for (const [alias, rule] of rules) {
      const outcomes: ConditionOutcome[] = rule.conditions.map((c) => {
        const d = e.differences.find((x) => x.metric === c.metric);
        return { condition: c, difference: d, satisfied: conditionHolds(c, d) };
      });
      const enough = e.exampleCount >= rule.minExampleCount;
      const facts = outcomes.map((o) => (o.difference ? `metric ${o.condition!.metric} Δ=${o.difference.meanDifference.toFixed(4)} CI [${o.difference.confidenceInterval?.lower.toFixed(4)}, ${o.difference.confidenceInterval?.upper.toFixed(4)}] (min Δ ${o.condition!.minDelta}${o.condition!.requireCiAboveZero ? ", CI above 0" : ""}${o.condition!.minValue === undefined ? "" : `, value ≥ ${o.condition!.minValue}`}): ${o.satisfied ? "held" : "did not hold"}` : `metric ${o.condition!.metric}: not computed by the run`)).join("; ");
      if (enough && outcomes.every((o) => o.satisfied)) {
        const reason = `${rule.source === "follow_up" ? "the job's promotion conditions" : "promotion rule"} held on ${e.evaluationRun}: ${facts}`;
        if (!(await decide(alias, { promoted: true, reason, outcomes, source: rule.source }))) continue;
        await this.move(tenant, alias, e.candidateAdapterVersion, { trigger: AliasMoveTrigger.ALIAS_MOVE_TRIGGER_PROMOTION, reason, actor: "promotion-rule", evaluationRun: e.evaluationRun, decidingMetrics: outcomes, ...(alias === asked && e.followUp?.deployment?.deployment ? { deployment: e.followUp.deployment.deployment } : {}) }, trx);
        moved.push(alias);
      } else {
        const reason = enough ? `not promoted on ${e.evaluationRun}: ${facts}` : `not promoted on ${e.evaluationRun}: ${e.exampleCount} examples, fewer than the rule's ${rule.minExampleCount}`;
        await decide(alias, { promoted: false, reason, outcomes, source: rule.source });
        held.push({ alias, outcomes });
      }
    }
    return { moved, held };
  }
}
