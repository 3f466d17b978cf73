import { sql, type Kysely, type Transaction } from "kysely";
import { schema, type TrainerTables } from "../db/tables.js";

/**
 * What makes past jobs' throughput a fair guess for a new one: the same hardware type and GPU
 * count, the same method (LoRA or QLoRA), the same base model (by digest, or failing that by
 * parameter count) and a max_seq_length within a factor of 2 (a step's cost per token grows with
 * the sequence through attention).
 */
export interface JobShape {
  method: string;
  modelDigest: string;
  parameterCount: number;
  maxSeqLength: number;
}

/** A measured throughput: the median of `jobs` recent similar jobs. */
export interface MeasuredThroughput {
  tokensPerSecond: number;
  jobs: number;
}

/** How many of the most similar recent jobs the median is taken over. */
export const measuredJobLimit = 5;

/** The throughput succeeded jobs measured, kept to refine the estimates of later jobs of the same shape. */
export class ThroughputHistory {
  constructor(private readonly db: Kysely<TrainerTables>) {}

  /** Keeps a succeeded job's throughput (in the transaction that records its success). */
  static async record(trx: Transaction<TrainerTables>, sample: { tenant: string; jobId: string; hardware: string; gpuCount: number; shape: JobShape; tokensPerSecond: number }): Promise<void> {
    // A GPU job that named no hardware type ran on whatever node pool took it: nothing to compare with.
    if (sample.hardware === "" || !(sample.tokensPerSecond > 0) || !Number.isFinite(sample.tokensPerSecond)) return;
    const s = sample.shape;
    await trx
      .withSchema(schema)
      .insertInto("throughput")
      .values({ tenant: sample.tenant, job_id: sample.jobId, hardware: sample.hardware, gpu_count: sample.gpuCount, method: s.method, model_digest: s.modelDigest, parameter_count: s.parameterCount, max_seq_length: s.maxSeqLength, tokens_per_second: sample.tokensPerSecond })
      .onConflict((oc) => oc.columns(["tenant", "job_id"]).doNothing())
      .execute();
  }

  /**
   * Per hardware type (and its GPU count) of `hardware`, the median throughput of the most similar
   * recent jobs of this installation (any tenant): those on the same base model first, then the
   * newest, at most `measuredJobLimit`. A type without such jobs is absent.
   */
  async similar(shape: JobShape, hardware: readonly { hardware: string; gpuCount: number }[]): Promise<Map<string, MeasuredThroughput>> {
    const found = new Map<string, MeasuredThroughput>();
    if (hardware.length === 0) return found;
    const { rows } = await sql<{ hardware: string; tokens_per_second: number }>`
      select hardware, tokens_per_second from (
        select t.hardware, t.tokens_per_second,
          row_number() over (partition by t.hardware order by (t.model_digest = ${shape.modelDigest}) desc, t.end_time desc) as rank
        from ${sql.table(`${schema}.throughput`)} t
        join (values ${sql.join(hardware.map((h) => sql`(${h.hardware}::text, ${h.gpuCount}::integer)`))}) as h(hardware, gpu_count)
          on h.hardware = t.hardware and h.gpu_count = t.gpu_count
        where t.method = ${shape.method}
          and (t.model_digest = ${shape.modelDigest} or (${shape.parameterCount}::bigint > 0 and t.parameter_count = ${shape.parameterCount}::bigint))
          and t.max_seq_length * 2 >= ${shape.maxSeqLength}::integer and t.max_seq_length <= 2 * ${shape.maxSeqLength}::integer
      ) ranked
      where rank <= ${measuredJobLimit}`.execute(this.db);
    const byHardware = new Map<string, number[]>();
    for (const r of rows) byHardware.set(r.hardware, [...(byHardware.get(r.hardware) ?? []), r.tokens_per_second]);
    for (const [h, values] of byHardware) found.set(h, { tokensPerSecond: median(values), jobs: values.length });
    return found;
  }
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
