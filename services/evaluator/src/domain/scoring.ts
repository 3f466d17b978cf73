import { bertScore, compileJsonSchemaCheck, compileRegexCheck, exactMatch, jsonCompliance, rougeScore, type EmbeddingProvider } from "@lathe/text";
import type { MetricName, RunSpec } from "../db/migrations.js";

/**
 * Scores one answer against its reference on a run's metrics, each between 0 and 1:
 * ROUGE-L F-measure as rouge_score computes it with its Porter stemmer; BERTScore F1 with the
 * run's encoder; format compliance (the answer matches the run's regex in full, is JSON, or is
 * JSON valid against its schema); exact match after trimming.
 */
export class Scorer {
  private readonly format: ((answer: string) => boolean) | undefined;

  constructor(
    private readonly metrics: readonly MetricName[],
    formatCheck: RunSpec["formatCheck"],
    private readonly encoder: EmbeddingProvider | undefined,
  ) {
    if (formatCheck?.kind === "regex") this.format = compileRegexCheck(formatCheck.pattern, { mode: "full" });
    else if (formatCheck?.kind === "json") this.format = (a) => jsonCompliance(a).valid;
    else if (formatCheck?.kind === "json_schema") {
      const check = compileJsonSchemaCheck(formatCheck.jsonSchema);
      this.format = (a) => check(a).valid;
    }
  }

  async score(answer: string, reference: string): Promise<Partial<Record<MetricName, number>>> {
    const out: Partial<Record<MetricName, number>> = {};
    for (const m of this.metrics) {
      if (m === "rouge_l") out.rouge_l = rougeScore(reference, answer, { types: ["rougeL"], useStemmer: true }).rougeL.fmeasure;
      else if (m === "exact_match") out.exact_match = exactMatch(answer, reference) ? 1 : 0;
      else if (m === "format_compliance") out.format_compliance = this.format?.(answer) ? 1 : 0;
      else if (m === "bertscore") {
        if (!this.encoder) throw new Error("BERTScore needs an encoder");
        out.bertscore = (await bertScore([answer], [reference], this.encoder)).scores[0]!.f1;
      }
    }
    return out;
  }
}
