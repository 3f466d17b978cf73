import { checkLabels, checkText, enumCodec, invalidArgument, parseName, parseNestedName, checkSecretRef } from "@lathe/kit";
import { compileJsonSchemaCheck, compileRegexCheck, InvalidFormatCheckError } from "@lathe/text";
import type { EvaluatedModel, EvaluationRun, Judge } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { FormatKind, type FormatCheck } from "@lathe/proto/lathe/type/v1/data_check";
import type { GenerationParams } from "@lathe/proto/lathe/type/v1/generation";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import type { MetricName, ModelSpec, RunSpec } from "../db/migrations.js";

/** Metrics as runs store them. */
export const metrics = enumCodec(Metric, { METRIC_ROUGE_L: "rouge_l", METRIC_BERTSCORE: "bertscore", METRIC_FORMAT_COMPLIANCE: "format_compliance", METRIC_EXACT_MATCH: "exact_match", METRIC_MEAN_TOKEN_ACCURACY: "mean_token_accuracy" });

/** The seed recipe's generation defaults: temperature 0.1, up to 512 new tokens; seeded, so a run reproduces. */
export const DEFAULT_GENERATION = { temperature: 0.1, topP: 1, maxTokens: 512, seed: 42, stop: [] as string[] };
export const DEFAULT_SHOTS = 3;
const MAX_SHOTS = 16;
const runIdPattern = /^[a-z][a-z0-9-]{0,62}$/;

export function checkRunId(field: string, id: string): string {
  if (!runIdPattern.test(id)) throw invalidArgument(field, `${JSON.stringify(id.slice(0, 80))} must be 1 to 63 characters of lowercase letters, digits and '-', starting with a letter`);
  return id;
}

/** The id of `evaluationRuns/{evaluation_run}`. */
export const parseRunName = (field: string, name: string): string => checkRunId(field, parseName(field, name, "evaluationRuns"));

function modelSpec(field: string, m: EvaluatedModel): ModelSpec {
  const modelId = parseName(`${field}.model`, m.model, "models");
  if (m.adapterVersion !== "") {
    const [vm] = parseNestedName(`${field}.adapter_version`, m.adapterVersion, ["models", "adapters", "versions"]);
    if (!/^[1-9][0-9]{0,8}$/.test(m.adapterVersion.split("/").at(-1)!)) throw invalidArgument(`${field}.adapter_version`, "the version must be a number");
    if (vm !== modelId) throw invalidArgument(`${field}.adapter_version`, `${m.adapterVersion} is a version of an adapter of models/${vm}, not of ${m.model}`);
  }
  let fewShot: ModelSpec["fewShot"] = null;
  if (m.fewShot) {
    const f = m.fewShot;
    parseNestedName(`${field}.few_shot.dataset_version`, f.datasetVersion, ["datasets", "versions"]);
    if (f.shots < 0 || f.shots > MAX_SHOTS) throw invalidArgument(`${field}.few_shot.shots`, `is ${f.shots}; it must be from 1 to ${MAX_SHOTS} (0 for the default, ${DEFAULT_SHOTS})`);
    fewShot = { datasetVersion: f.datasetVersion, shots: f.shots || DEFAULT_SHOTS, seed: f.seed ?? 42 };
  }
  return { model: m.model, adapterVersion: m.adapterVersion, fewShot };
}

function generation(g: GenerationParams | undefined): RunSpec["generation"] {
  const f = (n: string) => `evaluation_run.generation_params.${n}`;
  const t = g?.temperature ?? DEFAULT_GENERATION.temperature;
  if (!(t >= 0 && t <= 2)) throw invalidArgument(f("temperature"), `is ${t}; it must be from 0 to 2`);
  const p = g?.topP ?? DEFAULT_GENERATION.topP;
  if (!(p > 0 && p <= 1)) throw invalidArgument(f("top_p"), `is ${p}; it must be greater than 0 and at most 1`);
  const max = g?.maxTokens ?? DEFAULT_GENERATION.maxTokens;
  if (!Number.isInteger(max) || max < 1 || max > 32768) throw invalidArgument(f("max_tokens"), `is ${max}; it must be from 1 to 32768`);
  const stop = g?.stop ?? [];
  if (stop.length > 4 || stop.some((s) => s === "")) throw invalidArgument(f("stop"), "takes up to 4 non-empty strings");
  return { temperature: t, topP: p, maxTokens: max, seed: g?.seed ?? DEFAULT_GENERATION.seed, stop };
}

/**
 * The format check of a run, compiled once here so that a pattern or schema that cannot be
 * used is refused when the run is created, naming the field.
 */
export function formatCheckOf(fc: FormatCheck | undefined, field = "evaluation_run.format_check"): RunSpec["formatCheck"] {
  if (!fc || fc.kind === FormatKind.FORMAT_KIND_UNSPECIFIED) return null;
  try {
    if (fc.kind === FormatKind.FORMAT_KIND_REGEX) {
      if (fc.pattern === "" || fc.pattern.length > 10_000) throw invalidArgument(`${field}.pattern`, "is required for FORMAT_KIND_REGEX, at most 10,000 characters");
      compileRegexCheck(fc.pattern, { mode: "full" });
      return { kind: "regex", pattern: fc.pattern, jsonSchema: "" };
    }
    if (fc.kind === FormatKind.FORMAT_KIND_JSON) return { kind: "json", pattern: "", jsonSchema: "" };
    if (fc.kind === FormatKind.FORMAT_KIND_JSON_SCHEMA) {
      if (fc.jsonSchema === "" || Buffer.byteLength(fc.jsonSchema) > 100_000) throw invalidArgument(`${field}.json_schema`, "is required for FORMAT_KIND_JSON_SCHEMA, at most 100,000 bytes");
      compileJsonSchemaCheck(fc.jsonSchema);
      return { kind: "json_schema", pattern: "", jsonSchema: fc.jsonSchema };
    }
  } catch (err) {
    if (err instanceof InvalidFormatCheckError) throw invalidArgument(`${field}.${err.part === "schema" ? "json_schema" : "pattern"}`, err.message);
    throw err;
  }
  throw invalidArgument(`${field}.kind`, `${fc.kind} is not a FormatKind`);
}

/** A run's judge, checked: a model, an http(s) base URL or none (the gateway), a key reference, criteria. */
function judgeOf(j: Judge | undefined, hasBaseline: boolean): RunSpec["judge"] {
  if (!j || (j.model === "" && j.baseUrl === "" && j.apiKeySecret === "" && j.criteria === "")) return null;
  const f = (n: string) => `evaluation_run.judge.${n}`;
  if (!hasBaseline) throw invalidArgument("evaluation_run.judge", "compares the candidate's answers with the baseline's: set evaluation_run.baseline");
  if (j.model === "" || j.model.length > 256 || /[\s]/.test(j.model)) throw invalidArgument(f("model"), "is required: the judge model's name as its server knows it, at most 256 characters without spaces");
  let baseUrl = "";
  if (j.baseUrl !== "") {
    let u: URL;
    try {
      u = new URL(j.baseUrl);
    } catch {
      throw invalidArgument(f("base_url"), `${JSON.stringify(j.baseUrl.slice(0, 200))} is not a URL; give the API's base, e.g. https://host/v1`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw invalidArgument(f("base_url"), `must be http or https, not ${u.protocol}`);
    if (u.username !== "" || u.password !== "") throw invalidArgument(f("base_url"), "must not hold credentials; name the key in api_key_secret");
    baseUrl = j.baseUrl.replace(/\/+$/, "");
  }
  checkSecretRef(f("api_key_secret"), j.apiKeySecret);
  if (j.apiKeySecret !== "" && baseUrl === "") throw invalidArgument(f("api_key_secret"), "is for a judge at base_url; on the gateway the run's tenant's key is used");
  return { model: j.model, baseUrl, apiKeySecret: j.apiKeySecret, criteria: checkText(f("criteria"), j.criteria, 2000) };
}

/** A run's spec as the caller wrote it, checked, with defaults applied. */
export function runSpecOf(r: EvaluationRun | undefined): RunSpec {
  if (!r) throw invalidArgument("evaluation_run", "is required");
  const f = (n: string) => `evaluation_run.${n}`;
  if (!r.candidate) throw invalidArgument(f("candidate"), "is required");
  const candidate = modelSpec(f("candidate"), r.candidate);
  const baseline = r.baseline && r.baseline.model !== "" ? modelSpec(f("baseline"), r.baseline) : null;
  parseNestedName(f("eval_dataset_version"), r.evalDatasetVersion, ["datasets", "versions"]);
  const formatCheck = formatCheckOf(r.formatCheck);
  const names: MetricName[] = [];
  for (const [i, m] of r.metrics.entries()) {
    const name = metrics.name(m);
    if (name === undefined || m === Metric.METRIC_UNSPECIFIED) throw invalidArgument(f(`metrics[${i}]`), `${m} is not a metric (${metrics.names.join(", ")})`);
    if (!names.includes(name)) names.push(name);
  }
  if (names.length === 0) names.push("rouge_l", ...(formatCheck ? (["format_compliance"] as const) : []));
  if (names.includes("format_compliance") && !formatCheck) throw invalidArgument(f("format_check"), "is required for METRIC_FORMAT_COMPLIANCE");
  if (r.bertscoreModel !== "") parseName(f("bertscore_model"), r.bertscoreModel, "models");
  if (r.maxExamples < 0) throw invalidArgument(f("max_examples"), "must not be negative");
  if (r.bootstrapSamples !== 0 && (r.bootstrapSamples < 100 || r.bootstrapSamples > 100_000)) throw invalidArgument(f("bootstrap_samples"), `is ${r.bootstrapSamples}; it must be from 100 to 100000 (0 for the default, 1000)`);
  if (r.confidenceLevel !== 0 && !(r.confidenceLevel > 0 && r.confidenceLevel < 1)) throw invalidArgument(f("confidence_level"), `is ${r.confidenceLevel}; it must be greater than 0 and less than 1 (0 for the default, 0.95)`);
  return {
    displayName: checkText(f("display_name"), r.displayName, 200),
    labels: checkLabels(f("labels"), r.labels),
    candidate,
    baseline,
    evalDatasetVersion: r.evalDatasetVersion,
    metrics: names,
    formatCheck,
    generation: generation(r.generationParams),
    maxExamples: r.maxExamples,
    bertscoreModel: r.bertscoreModel,
    judge: judgeOf(r.judge, baseline !== null),
    bootstrapSamples: r.bootstrapSamples || 1000,
    confidenceLevel: r.confidenceLevel || 0.95,
    seed: r.seed ?? 42,
  };
}

/** The gateway's name of an evaluated model: `tiny`, or `tiny:adapter@3`. */
export function gatewayModelName(m: ModelSpec): string {
  const base = m.model.replace(/^models\//, "");
  if (m.adapterVersion === "") return base;
  const [, , , adapter, , version] = m.adapterVersion.split("/");
  return `${base}:${adapter}@${version}`;
}
