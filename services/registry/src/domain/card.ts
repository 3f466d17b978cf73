import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import type { AdapterVersion, Alias, Model } from "@lathe/proto/lathe/registry/v1/registry_service";

const metricNames: Record<number, string> = {
  [Metric.METRIC_ROUGE_L]: "ROUGE-L",
  [Metric.METRIC_BERTSCORE]: "BERTScore",
  [Metric.METRIC_FORMAT_COMPLIANCE]: "Format compliance",
  [Metric.METRIC_EXACT_MATCH]: "Exact match",
};

/**
 * A model card (Markdown, Hugging Face layout with YAML front matter) for an adapter version,
 * from what the registry knows: base model, data, LoRA settings, metrics and the last promotion's
 * comparison with the baseline, and the user's own fields from the version's labels
 * (`intended-use`, `limitations`, `license`).
 */
export function modelCard(v: AdapterVersion, base: Model, aliases: readonly Alias[], userFields: Record<string, string>): string {
  const lora = v.loraConfig;
  const lines: string[] = [
    "---",
    `base_model: ${base.name}`,
    "library_name: peft",
    `license: ${userFields["license"] ?? "other"}`,
    "tags: [lora, lathe]",
    "---",
    "",
    `# ${v.name}`,
    "",
    v.description || "A LoRA adapter fine-tuned with Lathe.",
    "",
    "## Model details",
    "",
    `- **Base model:** ${base.displayName} (\`${base.name}\`, ${base.architecture || "unknown architecture"}, ${base.parameterCount.toLocaleString("en-US")} parameters, digest \`${base.artifactDigest}\`)`,
    `- **Adapter:** \`${v.artifactDigest}\` (${v.sizeBytes.toLocaleString("en-US")} bytes)`,
    `- **Method:** ${v.method === 2 ? "QLoRA" : "LoRA"}${lora ? `, r=${lora.r}, alpha=${lora.loraAlpha}, dropout=${lora.loraDropout ?? 0}, rsLoRA ${lora.useRslora ? "on" : "off"}, target modules ${lora.targetModules.join(", ")}` : ""}`,
    `- **Chat template fingerprint:** \`${v.chatTemplateFingerprint || "none"}\``,
    `- **Created:** ${v.createTime?.toISOString() ?? ""} by ${v.creator || "unknown"}`,
    "",
    "## Training data",
    "",
    `- **Train:** ${v.trainDatasetVersion ? `\`${v.trainDatasetVersion}\`` : "not recorded"}`,
    `- **Eval:** ${v.evalDatasetVersion ? `\`${v.evalDatasetVersion}\`` : "not recorded"}`,
    `- **Fine-tuning job:** ${v.fineTuningJob ? `\`${v.fineTuningJob}\`` : "not recorded"}${v.checkpoint ? `, checkpoint \`${v.checkpoint}\`` : ""}`,
    "",
    "## Evaluation",
    "",
  ];
  if (v.headlineMetrics.length === 0) lines.push("No evaluation yet.");
  else {
    lines.push("| metric | value | 95% CI | examples |", "|---|---|---|---|");
    for (const m of v.headlineMetrics) lines.push(`| ${metricNames[m.metric] ?? m.metric} | ${m.value.toFixed(4)} | ${m.confidenceInterval ? `[${m.confidenceInterval.lower.toFixed(4)}, ${m.confidenceInterval.upper.toFixed(4)}]` : ""} | ${m.exampleCount} |`);
    lines.push("", `Evaluation runs: ${v.evaluationRuns.map((r) => `\`${r}\``).join(", ")}`);
  }
  const promotions = aliases.flatMap((a) => a.history.filter((h) => h.toVersion === v.name && h.decidingMetrics.length > 0).map((h) => ({ alias: a.name, h })));
  lines.push("", "## Comparison with the baseline", "");
  if (promotions.length === 0) lines.push("No promotion decided by a comparison yet.");
  for (const { alias, h } of promotions) {
    lines.push(`Promoted to \`${alias}\` by \`${h.evaluationRun}\`:`, "", "| metric | candidate | baseline | difference | 95% CI | holds |", "|---|---|---|---|---|---|");
    for (const o of h.decidingMetrics) {
      const d = o.difference;
      lines.push(`| ${metricNames[o.condition?.metric ?? 0] ?? ""} | ${d?.candidateValue.toFixed(4) ?? ""} | ${d?.baselineValue.toFixed(4) ?? ""} | ${d?.meanDifference.toFixed(4) ?? ""} | ${d?.confidenceInterval ? `[${d.confidenceInterval.lower.toFixed(4)}, ${d.confidenceInterval.upper.toFixed(4)}]` : ""} | ${o.satisfied ? "yes" : "no"} |`);
    }
    lines.push("");
  }
  lines.push("", "## Intended use", "", userFields["intended-use"] ?? "_Not filled in: set the version's `intended-use` label._", "", "## Limitations", "", userFields["limitations"] ?? "_Not filled in: set the version's `limitations` label._", "");
  return lines.join("\n");
}
