import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { AppError, call, errorCodeTable, fromGrpcError, qualifiedName, type ErrorCode } from "@lathe/kit";
import {
  CompareEvaluationRunsResponse,
  EvaluationExample,
  EvaluationRun,
  EvaluationRun_State as State,
  EvaluatorServiceClient,
  type EvaluatedModel,
  JudgeVerdict,
  ServingStats,
  type Prediction,
  type ReferenceLikelihood,
  type WatchEvaluationRunResponse,
} from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FormatKind, type FormatCheck } from "@lathe/proto/lathe/type/v1/data_check";
import { Metric, type ConfidenceInterval, type MetricDifference, type MetricValue } from "@lathe/proto/lathe/type/v1/metric";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { list, nonNegativeInt, number, parseLabel, positiveInt } from "../flags.js";
import { adapterName, aliasName, datasetVersionName, lastId, modelName, versionOfAdapter } from "../names.js";
import { printJson, printTable } from "../output.js";

/** `ID` or `evaluationRuns/ID` → `evaluationRuns/ID`. */
export const runName = (arg: string): string => qualifiedName("evaluationRuns", arg);

// The metrics by the names the CLI prints (the evaluator's, and the thresholds of `evals baseline`).
const metricNames: Record<number, string> = {
  [Metric.METRIC_ROUGE_L]: "rouge_l",
  [Metric.METRIC_BERTSCORE]: "bertscore",
  [Metric.METRIC_FORMAT_COMPLIANCE]: "format_compliance",
  [Metric.METRIC_EXACT_MATCH]: "exact_match",
  [Metric.METRIC_MEAN_TOKEN_ACCURACY]: "mean_token_accuracy",
};
const metricText = (m: Metric) => metricNames[m] ?? `metric ${m}`;

// What `--metrics` and `--threshold` take: the short names and the printed ones.
const metricByName: Record<string, Metric> = {
  rouge: Metric.METRIC_ROUGE_L,
  rouge_l: Metric.METRIC_ROUGE_L,
  bertscore: Metric.METRIC_BERTSCORE,
  exact_match: Metric.METRIC_EXACT_MATCH,
  format: Metric.METRIC_FORMAT_COMPLIANCE,
  format_compliance: Metric.METRIC_FORMAT_COMPLIANCE,
  mean_token_accuracy: Metric.METRIC_MEAN_TOKEN_ACCURACY,
  // Eval loss and perplexity come with mean token accuracy: the same teacher-forced pass.
  accuracy: Metric.METRIC_MEAN_TOKEN_ACCURACY,
  eval_loss: Metric.METRIC_MEAN_TOKEN_ACCURACY,
  perplexity: Metric.METRIC_MEAN_TOKEN_ACCURACY,
};

/** `--metrics rouge,bertscore,…` → the Metric values, each once. */
export function parseMetrics(v: string): Metric[] {
  const out: Metric[] = [];
  for (const name of list(v)) {
    const m = metricByName[name];
    if (m === undefined) throw new Error(`--metrics ${v}: unknown metric ${name}; expected rouge, bertscore, exact_match, format or mean_token_accuracy (eval_loss, perplexity)`);
    if (!out.includes(m)) out.push(m);
  }
  if (out.length === 0) throw new Error(`--metrics ${v}: expected one or more of rouge, bertscore, exact_match, format, mean_token_accuracy`);
  return out;
}

/** One `--threshold NAME=VALUE` of `evals baseline`. */
export interface Threshold {
  metric: Metric;
  value: number;
  /** The value as given, for printing it back. */
  text: string;
}

const thresholdNames = ["rouge_l", "bertscore", "exact_match", "format_compliance", "mean_token_accuracy"];

/** A repeatable `--threshold rouge_l=0.6`, collected in order. */
export function parseThreshold(v: string, previous: Threshold[] = []): Threshold[] {
  const eq = v.indexOf("=");
  const name = eq < 0 ? v : v.slice(0, eq);
  const text = eq < 0 ? "" : v.slice(eq + 1).trim();
  if (eq < 0 || !thresholdNames.includes(name)) throw new Error(`--threshold ${v}: expected NAME=VALUE, NAME one of ${thresholdNames.join(", ")}`);
  const value = Number(text);
  if (text === "" || !Number.isFinite(value) || value < 0 || value > 1) throw new Error(`--threshold ${v}: expected a value from 0 to 1`);
  return [...previous.filter((t) => t.metric !== metricByName[name]), { metric: metricByName[name]!, value, text }];
}

/** `MODEL`, `MODEL:ADAPTER`, `MODEL:ADAPTER@N` or `MODEL:ADAPTER@ALIAS`, as a flag gives it. */
interface ModelRef {
  model: string;
  adapter: string | undefined;
  at: string | undefined;
}

function parseModelRef(flag: string, spec: string): ModelRef {
  const colon = spec.indexOf(":");
  const model = colon < 0 ? spec : spec.slice(0, colon);
  const ref = colon < 0 ? undefined : spec.slice(colon + 1);
  const at = ref?.indexOf("@") ?? -1;
  const adapter = ref === undefined ? undefined : at < 0 ? ref : ref.slice(0, at);
  const bad = model === "" || model.includes("@") || (ref !== undefined && (adapter === "" || adapter!.includes("/") || ref.slice(at + 1) === ""));
  if (bad) throw new Error(`--${flag} ${spec}: expected MODEL, MODEL:ADAPTER (its latest version), MODEL:ADAPTER@N or MODEL:ADAPTER@ALIAS`);
  return { model, adapter, at: ref === undefined || at < 0 ? undefined : ref.slice(at + 1) };
}

/**
 * The model a run evaluates, its adapter version pinned: a run records versions, so an alias is
 * resolved to the version it points at now, and a bare adapter to its latest version.
 */
async function resolveModel(registry: RegistryServiceClient, r: ModelRef): Promise<{ model: string; adapterVersion: string }> {
  const model = modelName(r.model);
  if (r.adapter === undefined) return { model, adapterVersion: "" };
  const adapter = `${r.model}/${r.adapter}`;
  if (r.at === undefined) {
    const { adapter: a } = await call(registry, "getAdapter", { name: adapterName(adapter) });
    if (!a?.latestVersion) throw new Error(`${adapterName(adapter)} has no version yet`);
    return { model, adapterVersion: a.latestVersion };
  }
  if (/^[1-9][0-9]*$/.test(r.at)) return { model, adapterVersion: versionOfAdapter(adapter, r.at) };
  const { alias } = await call(registry, "getAlias", { name: aliasName(adapter, r.at) });
  if (!alias?.adapterVersion) throw new Error(`${aliasName(adapter, r.at)} points at no version`);
  return { model, adapterVersion: alias.adapterVersion };
}

/** The flags of `evals create` and `evals baseline` that set how answers are generated and scored. */
interface RunFlags extends ConnectionOptions {
  metrics?: Metric[];
  regex?: string;
  jsonOutput?: boolean;
  jsonSchema?: string;
  bertscoreModel?: string;
  judge?: string;
  judgeUrl?: string;
  judgeKeySecret?: string;
  judgeCriteria?: string;
  maxExamples?: number;
  temperature?: number;
  maxTokens?: number;
  seed?: number;
  id?: string;
  label?: Record<string, string>;
  requestId?: string;
}

function withRunFlags(cmd: Command): Command {
  return withConnection(
    cmd
      .option("--metrics <list>", "comma-separated: rouge (ROUGE-L F), bertscore, exact_match, format, mean_token_accuracy (teacher forcing on the model's weights; also gives eval loss and perplexity; eval_loss and perplexity name it too) (default: rouge, and format with a format flag)", parseMetrics)
      .option("--regex <pattern>", "the format answers must have: a regular expression the whole answer matches")
      .option("--json-output", "the format answers must have: one JSON value")
      .option("--json-schema <file>", "the format answers must have: JSON valid against this JSON Schema (draft 2020-12)")
      .option("--bertscore-model <model>", "the encoder for BERTScore, a registered model: ID or models/ID (default: the evaluator's)")
      .option("--judge <model>", "an LLM judge of candidate against baseline, asked in both orders (a model the gateway serves, or one at --judge-url)")
      .option("--judge-url <url>", "the judge's OpenAI-compatible API, up to /v1 (default: the gateway)")
      .option("--judge-key-secret <ref>", "where the evaluator reads the judge's API key: env:NAME or file:/path")
      .option("--judge-criteria <text>", "what makes an answer better, for the judge")
      .option("--max-examples <n>", "evaluate the first N examples only", positiveInt("max-examples"))
      .addOption(new Option("--temperature <t>", "sampling temperature, 0 to 2 (default 0.1)").argParser(number("temperature", (n) => n >= 0 && n <= 2, "a number from 0 to 2")))
      .option("--max-tokens <n>", "most tokens per answer (default 512)", positiveInt("max-tokens"))
      .option("--seed <n>", "the sampler's seed (default 42)", nonNegativeInt("seed"))
      .option("--id <id>", "the run's id: lowercase letters, digits and - (default: one the server makes)")
      .addOption(new Option("--label <key=value>", "a label of the run (repeatable)").argParser(parseLabel))
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the run the first call created"),
  );
}

function formatCheckOf(o: RunFlags): FormatCheck | undefined {
  const given = [o.regex !== undefined, o.jsonOutput === true, o.jsonSchema !== undefined].filter(Boolean).length;
  if (given > 1) throw new Error("give at most one of --regex, --json-output, --json-schema");
  if (o.regex !== undefined) return { kind: FormatKind.FORMAT_KIND_REGEX, pattern: o.regex, jsonSchema: "" };
  if (o.jsonOutput) return { kind: FormatKind.FORMAT_KIND_JSON, pattern: "", jsonSchema: "" };
  if (o.jsonSchema !== undefined) {
    let text: string;
    try {
      text = readFileSync(o.jsonSchema, "utf8");
    } catch (err) {
      throw new Error(`--json-schema ${o.jsonSchema}: cannot read it: ${(err as Error).message}`);
    }
    return { kind: FormatKind.FORMAT_KIND_JSON_SCHEMA, pattern: "", jsonSchema: text };
  }
  return undefined;
}

/** The run the flags describe, for the given candidate and baseline; the server checks the rest. */
function runOf(o: RunFlags, evalDataset: string, candidate: EvaluatedModel, baseline: EvaluatedModel | undefined, metrics: Metric[]): EvaluationRun {
  const formatCheck = formatCheckOf(o);
  if (metrics.includes(Metric.METRIC_FORMAT_COMPLIANCE) && formatCheck === undefined) throw new Error("the format metric needs the format: give --regex, --json-output or --json-schema");
  // With no --metrics the server adds format compliance itself; a list that leaves it out would ignore the format.
  if (metrics.length > 0 && !metrics.includes(Metric.METRIC_FORMAT_COMPLIANCE) && formatCheck !== undefined) throw new Error("--regex, --json-output and --json-schema are for the format metric: add format to --metrics");
  return EvaluationRun.fromPartial({
    labels: o.label ?? {},
    candidate,
    baseline,
    evalDatasetVersion: datasetVersionName(evalDataset),
    metrics,
    formatCheck,
    generationParams: { temperature: o.temperature, maxTokens: o.maxTokens, seed: o.seed },
    maxExamples: o.maxExamples ?? 0,
    bertscoreModel: o.bertscoreModel === undefined ? "" : modelName(o.bertscoreModel),
    judge: judgeOf(o),
  });
}

/** `--judge M [--judge-url U] [--judge-key-secret R] [--judge-criteria T]`, or none. */
function judgeOf(o: RunFlags): EvaluationRun["judge"] {
  if (o.judge === undefined) {
    if (o.judgeUrl !== undefined || o.judgeKeySecret !== undefined || o.judgeCriteria !== undefined) throw new Error("--judge-url, --judge-key-secret and --judge-criteria are for a judge: give --judge MODEL");
    return undefined;
  }
  return { model: o.judge, baseUrl: o.judgeUrl ?? "", apiKeySecret: o.judgeKeySecret ?? "", criteria: o.judgeCriteria ?? "" };
}

/** `--shots K --train D@V` of one side as its few-shot prompt, or none. */
function fewShotOf(shotsFlag: string, trainFlag: string, shots: number | undefined, train: string | undefined): EvaluatedModel["fewShot"] {
  if (shots !== undefined && train === undefined) throw new Error(`--${shotsFlag} needs --${trainFlag} D@V: the dataset version the solved examples come from`);
  if (train === undefined) return undefined;
  return { datasetVersion: datasetVersionName(train), shots: shots ?? 0 };
}

// ---- what the commands print ----

const stateText = (s: State) => (State[s] ?? String(s)).replace("STATE_", "").toLowerCase();
const terminal = (s: State) => s === State.STATE_SUCCEEDED || s === State.STATE_FAILED || s === State.STATE_CANCELLED;
const score = (v: number) => v.toFixed(3);
const signed = (v: number) => `${v > 0 ? "+" : v < 0 ? "-" : " "}${Math.abs(v).toFixed(3)}`;
const interval = (ci: ConfidenceInterval | undefined, f: (v: number) => string = score) => (ci ? `[${f(ci.lower)}, ${f(ci.upper)}]` : "");
const withCi = (v: MetricValue | undefined) => (v ? `${score(v.value)} ${interval(v.confidenceInterval)}` : "-");
const levelText = (level: number) => `${Number((level * 100).toFixed(1))}%`;
const pValue = (p: number) => (p < 0.001 ? "<0.001" : p.toFixed(3));
const count = (n: number) => n.toLocaleString("en-US");
const ms = (v: number) => (v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);

/** A dataset version as the CLI takes it back: `D@V`. */
const versionText = (name: string) => {
  const m = /^datasets\/([^/]+)\/versions\/([^/]+)$/.exec(name);
  return m ? `${m[1]}@${m[2]}` : name;
};

/** A model as the flags name it: `tiny`, `tiny:support@3`, with its few-shot prompt. */
export function modelText(m: EvaluatedModel | undefined): string {
  if (!m) return "-";
  const base = m.model.replace(/^models\//, "");
  const parts = m.adapterVersion.split("/");
  const name = m.adapterVersion === "" ? base : parts.length === 6 ? `${base}:${parts[3]}@${parts[5]}` : `${base} + ${m.adapterVersion}`;
  const f = m.fewShot;
  return f ? `${name}, ${f.shots}-shot from ${versionText(f.datasetVersion)}${f.seed !== undefined && f.seed !== 42 ? ` (seed ${f.seed})` : ""}` : name;
}

/** `running 3/12 examples`, or the state alone before the examples are known. */
function progressLine(r: EvaluationRun): string {
  if (r.totalExampleCount === 0) return stateText(r.state);
  const failed = r.failedExampleCount > 0 ? `, ${r.failedExampleCount} failed` : "";
  return `${stateText(r.state)} ${r.completedExampleCount + r.failedExampleCount}/${r.totalExampleCount} examples${failed}`;
}

/** The rows of the metric table: each metric's values, and the difference when there is a baseline. */
function metricRows(r: EvaluationRun): { rows: Record<string, string>[]; columns: string[] } {
  const level = r.candidateResults[0]?.confidenceInterval?.level ?? (r.confidenceLevel || 0.95);
  const ciColumn = `${levelText(level)} ci`;
  const hasBaseline = r.baseline !== undefined && r.baseline.model !== "";
  const rows = r.candidateResults.map((c) => {
    const row: Record<string, string> = { metric: metricText(c.metric), candidate: withCi(c) };
    if (hasBaseline) {
      const d = r.differences.find((x) => x.metric === c.metric);
      Object.assign(row, { baseline: withCi(r.baselineResults.find((b) => b.metric === c.metric)), ...differenceCells(d, ciColumn) });
    }
    return row;
  });
  return { rows, columns: hasBaseline ? ["metric", "candidate", "baseline", "difference", ciColumn, "wins/ties/losses", "p"] : ["metric", "candidate"] };
}

function differenceCells(d: MetricDifference | undefined, ciColumn: string): Record<string, string> {
  if (!d) return { difference: "-" };
  return { difference: signed(d.meanDifference), [ciColumn]: interval(d.confidenceInterval, signed), "wins/ties/losses": `${d.winCount}/${d.tieCount}/${d.lossCount}`, p: pValue(d.pValue) };
}

const costText = (s: ServingStats | undefined) => (s?.costPer1000Answers === undefined ? "no price configured" : `${s.costPer1000Answers.toFixed(4)} USD`);
const latencyText = (s: ServingStats | undefined) => (s ? `${ms(s.latencyP50Ms)} / ${ms(s.latencyP95Ms)}` : "-");
function tokensText(s: ServingStats | undefined): string {
  if (!s) return "-";
  const per = s.answerCount > 0 ? ` (${count(Math.round(s.promptTokens / s.answerCount))} / ${count(Math.round(s.completionTokens / s.answerCount))} per answer)` : "";
  return `${count(s.promptTokens)} / ${count(s.completionTokens)}${per}`;
}

/** What `evals get` and the end of `evals create --watch` print. */
export function printRun(r: EvaluationRun, out: NodeJS.WritableStream = process.stdout): void {
  const rows: [string, string][] = [
    ["name", r.name],
    ["state", stateText(r.state)],
    ["candidate", modelText(r.candidate)],
  ];
  if (r.baseline && r.baseline.model !== "") rows.push(["baseline", modelText(r.baseline)]);
  rows.push(["eval set", r.evalDatasetVersion]);
  rows.push(["examples", `${r.completedExampleCount} done, ${r.failedExampleCount} failed, ${r.totalExampleCount || "?"} total`]);
  if (r.displayName) rows.push(["display name", r.displayName]);
  if (Object.keys(r.labels).length > 0) rows.push(["labels", Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(", ")]);
  if (r.fineTuningJob) rows.push(["fine-tuning job", r.fineTuningJob]);
  if (r.bertscoreModelDigest) rows.push(["bertscore encoder", `${r.bertscoreModel || "the evaluator's"} ${r.bertscoreModelDigest}, layer ${r.bertscoreLayer}`]);
  rows.push(["created", r.createTime?.toISOString() ?? ""]);
  if (r.endTime) rows.push(["ended", r.endTime.toISOString()]);
  if (r.error) rows.push(["error", `${r.error.message} (${r.error.code}, ${r.error.reason})`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.write(`${k.padEnd(width)}  ${v}\n`);
  if (r.candidateResults.length === 0) return;

  out.write("\n");
  const { rows: metricTable, columns } = metricRows(r);
  printTable(metricTable, columns, out);
  const level = r.candidateResults[0]?.confidenceInterval?.level ?? 0.95;
  out.write(`[lower, upper]: ${levelText(level)} bootstrap interval over ${r.bootstrapSamples || 1000} resamples${columns.includes("p") ? "; difference = candidate − baseline, paired per example" : ""}\n`);

  if (r.judgeResult) {
    const j = r.judgeResult;
    const ci = j.confidenceInterval;
    out.write(`\njudge ${j.model}: candidate wins ${j.winCount}, ties ${j.tieCount} (${j.disagreementCount} where the two orders disagreed, ${j.unreadableCount} unreadable), baseline wins ${j.lossCount} of ${j.exampleCount}; win rate ${score(j.winRate)}${ci ? ` [${score(ci.lower)}, ${score(ci.upper)}]` : ""} (a tie counts half)\n`);
  }
  if (r.candidateLikelihood) {
    out.write("\n");
    const lk: [string, ReferenceLikelihood | undefined][] = [["candidate", r.candidateLikelihood]];
    if (r.baseline && r.baseline.model !== "") lk.push(["baseline", r.baselineLikelihood]);
    const cell = (l: ReferenceLikelihood | undefined, f: (l: ReferenceLikelihood) => string) => (l ? f(l) : "-");
    printTable(
      [
        { "reference answers (teacher forcing)": "eval loss", ...Object.fromEntries(lk.map(([k, l]) => [k, cell(l, (x) => x.evalLoss.toFixed(4))])) },
        { "reference answers (teacher forcing)": "perplexity", ...Object.fromEntries(lk.map(([k, l]) => [k, cell(l, (x) => x.perplexity.toFixed(3))])) },
        { "reference answers (teacher forcing)": "mean token accuracy", ...Object.fromEntries(lk.map(([k, l]) => [k, cell(l, (x) => x.meanTokenAccuracy.toFixed(4))])) },
        { "reference answers (teacher forcing)": "tokens (examples cut)", ...Object.fromEntries(lk.map(([k, l]) => [k, cell(l, (x) => `${x.tokenCount} (${x.truncatedExampleCount})`)])) },
      ],
      ["reference answers (teacher forcing)", ...lk.map(([k]) => k)],
      out,
    );
  }

  out.write("\n");
  const sides: [string, ServingStats | undefined][] = [["candidate", r.candidateServing]];
  if (r.baseline && r.baseline.model !== "") sides.push(["baseline", r.baselineServing]);
  printTable(
    [
      { serving: "tokens in/out", ...Object.fromEntries(sides.map(([k, s]) => [k, tokensText(s)])) },
      { serving: "latency p50/p95", ...Object.fromEntries(sides.map(([k, s]) => [k, latencyText(s)])) },
      { serving: "cost per 1,000 answers", ...Object.fromEntries(sides.map(([k, s]) => [k, costText(s)])) },
    ],
    ["serving", ...sides.map(([k]) => k)],
    out,
  );
}

/** A run that did not succeed, as the error `lathe` prints and exits 1 on. */
function notSucceeded(r: EvaluationRun): Error | undefined {
  const done = `${r.completedExampleCount + r.failedExampleCount}/${r.totalExampleCount} examples`;
  if (r.state === State.STATE_FAILED) {
    const e = r.error;
    const code = (e?.code ?? "") in errorCodeTable ? (e!.code as ErrorCode) : "INTERNAL";
    return new AppError(code, e?.reason || code, `${r.name} failed after ${done}: ${e?.message ?? "no reason given"}`, e?.metadata ?? {});
  }
  if (r.state === State.STATE_CANCELLED) return new Error(`${r.name} was cancelled after ${done}`);
  return undefined;
}

/**
 * Streams a run until it ends: a line when its state or progress changes (`running 3/12
 * examples`), or a JSON line per snapshot with `json`; `quiet` prints nothing. Resolves with the
 * last run.
 */
async function followRun(client: EvaluatorServiceClient, name: string, print: "lines" | "json" | "quiet"): Promise<EvaluationRun> {
  const last = await new Promise<EvaluationRun | undefined>((resolve, reject) => {
    let seen: EvaluationRun | undefined;
    let printed = "";
    // A large eval set may take hours: no deadline on the stream.
    const stream = client.watchEvaluationRun({ name }, { deadline: Infinity });
    stream.on("data", (m: WatchEvaluationRunResponse) => {
      const r = m.evaluationRun!;
      seen = r;
      if (print === "json") process.stdout.write(`${JSON.stringify(EvaluationRun.toJSON(r))}\n`);
      else if (print === "lines") {
        const line = progressLine(r);
        if (line !== printed) process.stdout.write(`${line}\n`);
        printed = line;
      }
    });
    stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    stream.on("end", () => resolve(seen));
  });
  if (!last) throw new Error(`the stream of ${name} ended before it sent the run`);
  if (!terminal(last.state)) throw new Error(`the stream of ${name} ended while the run is ${stateText(last.state)}; watch it again with lathe evals watch ${lastId(name)}`);
  return last;
}

/** `evals watch`, and `evals create --watch`: follows the run, then prints its summary; rejects when it failed or was cancelled. */
async function watchRun(client: EvaluatorServiceClient, name: string, json: boolean | undefined): Promise<EvaluationRun> {
  const r = await followRun(client, name, json ? "json" : "lines");
  const failed = notSucceeded(r);
  if (failed) throw failed;
  if (!json) {
    process.stdout.write("\n");
    printRun(r);
  }
  return r;
}

type CreateFlags = RunFlags & {
  model: string;
  dataset: string;
  baseline?: string;
  baselineShots?: number;
  baselineTrain?: string;
  shots?: number;
  train?: string;
  watch?: boolean;
};

/** `lathe evals create`: pins the models' versions, creates the run, and prints it or follows it. */
async function createRun(o: CreateFlags): Promise<void> {
  const candidateRef = parseModelRef("model", o.model);
  const baselineRef = o.baseline === undefined ? undefined : parseModelRef("baseline", o.baseline);
  if (baselineRef === undefined && (o.baselineShots !== undefined || o.baselineTrain !== undefined)) throw new Error("--baseline-shots and --baseline-train describe the baseline: give --baseline MODEL too");
  const candidateShots = fewShotOf("shots", "train", o.shots, o.train);
  const baselineShots = fewShotOf("baseline-shots", "baseline-train", o.baselineShots, o.baselineTrain);
  const registry = connect(RegistryServiceClient, o);
  const client = connect(EvaluatorServiceClient, o);
  try {
    const candidate = { ...(await resolveModel(registry, candidateRef)), fewShot: candidateShots };
    const baseline = baselineRef === undefined ? undefined : { ...(await resolveModel(registry, baselineRef)), fewShot: baselineShots };
    const run = runOf(o, o.dataset, candidate, baseline, o.metrics ?? []);
    const { evaluationRun: created } = await call(client, "createEvaluationRun", { evaluationRunId: o.id ?? "", evaluationRun: run, requestId: o.requestId ?? "" });
    if (!o.watch) {
      if (o.json) printJson(EvaluationRun.toJSON(created!));
      else process.stdout.write(`created ${created!.name} (${stateText(created!.state)}): ${modelText(created!.candidate)}${baseline ? ` against ${modelText(created!.baseline)}` : ""} on ${created!.evalDatasetVersion}\nfollow it with: lathe evals watch ${lastId(created!.name)}\n`);
      return;
    }
    if (!o.json) process.stdout.write(`created ${created!.name}\n`);
    await watchRun(client, created!.name, o.json);
  } finally {
    registry.close();
    client.close();
  }
}

type BaselineFlags = RunFlags & { model: string; train: string; eval: string; shots: number; threshold?: Threshold[] };

/** Whether a threshold holds, in a sentence: the value with its interval, the comparison, the verdict. */
export function thresholdVerdict(t: Threshold, v: MetricValue | undefined, shots: number): { met: boolean | undefined; line: string } {
  const name = metricText(t.metric);
  const shown = t.text.includes(".") ? t.value.toFixed(Math.max(2, t.text.length - t.text.indexOf(".") - 1)) : t.value.toFixed(2);
  if (!v) return { met: undefined, line: `${name}: no value (no answer was scored on it)` };
  const met = v.value >= t.value;
  return {
    met,
    line: met
      ? `${name} ${withCi(v)} ≥ ${shown}: met — a ${shots}-shot prompt already reaches your threshold; fine-tuning may not be worth it`
      : `${name} ${withCi(v)} < ${shown}: not met — fine-tuning may help`,
  };
}

/**
 * `lathe evals baseline`: evaluates the base model with a few-shot prompt, waits, and says of each
 * threshold whether the prompt alone meets it. Either answer exits 0.
 */
async function baselineRun(o: BaselineFlags): Promise<void> {
  if (o.model.includes(":")) throw new Error(`--model ${o.model}: evals baseline measures a base model without an adapter; compare adapters with evals create --model M:ADAPTER --baseline M`);
  const thresholds = o.threshold ?? [];
  // The thresholds' metrics are computed whether or not --metrics names them.
  const metrics = [...(o.metrics ?? [])];
  for (const t of thresholds) if (!metrics.includes(t.metric)) metrics.push(t.metric);
  const formatGiven = o.regex !== undefined || o.jsonOutput === true || o.jsonSchema !== undefined;
  if (formatGiven && metrics.length > 0 && !metrics.includes(Metric.METRIC_FORMAT_COMPLIANCE)) metrics.push(Metric.METRIC_FORMAT_COMPLIANCE);
  const client = connect(EvaluatorServiceClient, o);
  try {
    const run = runOf(o, o.eval, { model: modelName(o.model), adapterVersion: "", fewShot: { datasetVersion: datasetVersionName(o.train), shots: o.shots } }, undefined, metrics);
    const { evaluationRun: created } = await call(client, "createEvaluationRun", { evaluationRunId: o.id ?? "", evaluationRun: run, requestId: o.requestId ?? "" });
    if (!o.json) process.stdout.write(`created ${created!.name}: ${modelText(created!.candidate)} on ${created!.evalDatasetVersion}\n`);
    const r = await followRun(client, created!.name, o.json ? "quiet" : "lines");
    const failed = notSucceeded(r);
    if (failed) throw failed;
    const verdicts = thresholds.map((t) => {
      const v = r.candidateResults.find((c) => c.metric === t.metric);
      return { t, v, ...thresholdVerdict(t, v, o.shots) };
    });
    if (o.json) {
      printJson({
        evaluationRun: EvaluationRun.toJSON(r),
        thresholds: verdicts.map(({ t, v, met }) => ({ metric: metricText(t.metric), threshold: t.value, value: v?.value ?? null, lower: v?.confidenceInterval?.lower ?? null, upper: v?.confidenceInterval?.upper ?? null, met: met ?? null })),
      });
      return;
    }
    process.stdout.write("\n");
    printRun(r);
    process.stdout.write("\n");
    if (verdicts.length === 0) process.stdout.write(`no --threshold given: the values above are what a ${o.shots}-shot prompt reaches without fine-tuning\n`);
    for (const v of verdicts) process.stdout.write(`${v.line}\n`);
  } finally {
    client.close();
  }
}

/** At most `max` characters of a text on one line, `…` where it was cut. */
export function shorten(text: string, max: number): string {
  // Control characters (a model's stray escape codes) would garble the terminal.
  const one = text.replace(/[\s\p{Cc}]+/gu, " ").trim();
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`;
}

function answerCell(p: Prediction | undefined, width: number): string {
  if (!p) return "-";
  if (p.error) return shorten(`(no answer: ${p.error})`, width);
  return shorten(p.text, width) || "(empty)";
}

const verdictText: Record<number, string> = { [JudgeVerdict.JUDGE_VERDICT_CANDIDATE]: "candidate", [JudgeVerdict.JUDGE_VERDICT_BASELINE]: "baseline", [JudgeVerdict.JUDGE_VERDICT_TIE]: "tie" };

/** `evals predictions`: each example's reference, answers and scores; long texts cut to fit a line. */
function printPredictions(r: EvaluationRun, examples: EvaluationExample[], width: number): void {
  const hasBaseline = r.baseline !== undefined && r.baseline.model !== "";
  const scoreOf = (p: Prediction | undefined, m: Metric) => {
    const s = p?.scores.find((x) => x.metric === m);
    return s ? score(s.value) : "-";
  };
  const metricColumns = r.metrics.map((m) => (hasBaseline ? `${metricText(m)} (c/b)` : metricText(m)));
  printTable(
    examples.map((e) => ({
      index: String(e.index),
      reference: shorten(e.reference, width),
      candidate: answerCell(e.candidate, width),
      ...(hasBaseline ? { baseline: answerCell(e.baseline, width) } : {}),
      ...Object.fromEntries(r.metrics.map((m, i) => [metricColumns[i]!, hasBaseline ? `${scoreOf(e.candidate, m)} / ${scoreOf(e.baseline, m)}` : scoreOf(e.candidate, m)])),
      ...(r.judge ? { judge: verdictText[e.judgeVerdict] ?? "-" } : {}),
    })),
    ["index", "reference", "candidate", ...(hasBaseline ? ["baseline"] : []), ...metricColumns, ...(r.judge ? ["judge"] : [])],
  );
}

/** `evals compare`: the paired differences of A − B, then each run's serving costs. */
function printComparison(a: EvaluationRun, b: EvaluationRun, res: CompareEvaluationRunsResponse): void {
  const level = res.differences[0]?.confidenceInterval?.level ?? 0.95;
  const ciColumn = `${levelText(level)} ci`;
  const rows: Record<string, string>[] = res.differences.map((d) => ({
    metric: metricText(d.metric),
    a: score(d.candidateValue),
    b: score(d.baselineValue),
    ...differenceCells(d, ciColumn),
  }));
  rows.push({ metric: "cost per 1,000 answers", a: costText(a.candidateServing), b: costText(b.candidateServing) });
  rows.push({ metric: "latency p50/p95", a: latencyText(a.candidateServing), b: latencyText(b.candidateServing) });
  process.stdout.write(`A: ${a.name} (${modelText(a.candidate)})\nB: ${b.name} (${modelText(b.candidate)})\n\n`);
  if (res.differences.length === 0) process.stdout.write("the runs computed no metric in common: only their serving compares\n\n");
  printTable(rows, ["metric", "a", "b", "difference", ciColumn, "wins/ties/losses", "p"]);
  process.stdout.write(`difference = A − B, paired over the ${res.pairedExampleCount} examples both runs scored\n`);
}

/** `lathe evals …`: evaluation runs on the evaluator service. */
export function evalsCommand(): Command {
  const evals = new Command("evals").description("evaluate models and adapters on an eval set: metrics with confidence intervals, paired comparisons, few-shot baselines");

  withRunFlags(
    evals
      .command("create")
      .description("evaluate --model on --dataset, optionally against --baseline on the same examples")
      .requiredOption("--model <model>", "the candidate: MODEL, MODEL:ADAPTER (its latest version), MODEL:ADAPTER@N or MODEL:ADAPTER@ALIAS (the version it points at now)")
      .requiredOption("--dataset <version>", "the eval set: DATASET@VERSION or datasets/D/versions/V; each row's final assistant message is the reference")
      .option("--baseline <model>", "the model to compare with, as --model")
      .option("--baseline-shots <k>", "show the baseline K solved examples from --baseline-train before each prompt (default 3)", positiveInt("baseline-shots"))
      .option("--baseline-train <version>", "where the baseline's solved examples come from: DATASET@VERSION")
      .option("--shots <k>", "show the candidate K solved examples from --train before each prompt (default 3)", positiveInt("shots"))
      .option("--train <version>", "where the candidate's solved examples come from: DATASET@VERSION")
      .option("--watch", "then follow the run until it ends and print its results (exit 1 when it fails or is cancelled)"),
  ).action(createRun);

  withConnection(evals.command("get <run>").description("show a run and its results: RUN is ID or evaluationRuns/ID")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(EvaluatorServiceClient, o);
    try {
      const { evaluationRun } = await call(client, "getEvaluationRun", { name: runName(arg) });
      if (o.json) printJson(EvaluationRun.toJSON(evaluationRun!));
      else printRun(evaluationRun!);
    } finally {
      client.close();
    }
  });

  withConnection(
    evals
      .command("list")
      .description("list your evaluation runs")
      .option("--filter <filter>", 'e.g. state = STATE_SUCCEEDED AND labels.team = "support"; fields: state, candidate.adapter_version, fine_tuning_job, labels.<key>', ""),
  ).action(async (o: ConnectionOptions & { filter: string }) => {
    const client = connect(EvaluatorServiceClient, o);
    try {
      const all: EvaluationRun[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listEvaluationRuns", { pageSize: 1000, pageToken, filter: o.filter });
        all.push(...page.evaluationRuns);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ evaluationRuns: all.map((r) => EvaluationRun.toJSON(r)) });
      else if (all.length === 0) process.stdout.write("no evaluation runs\n");
      else
        printTable(
          all.map((r) => ({
            name: r.name,
            state: stateText(r.state),
            candidate: modelText(r.candidate),
            baseline: r.baseline && r.baseline.model !== "" ? modelText(r.baseline) : "",
            "eval set": versionText(r.evalDatasetVersion),
            examples: r.totalExampleCount > 0 ? `${r.completedExampleCount + r.failedExampleCount}/${r.totalExampleCount}` : "",
            results: r.candidateResults.map((v) => `${metricText(v.metric)} ${score(v.value)}`).join(", "),
            created: r.createTime?.toISOString() ?? "",
          })),
          ["name", "state", "candidate", "baseline", "eval set", "examples", "results", "created"],
        );
    } finally {
      client.close();
    }
  });

  withConnection(evals.command("watch <run>").description("follow a run until it ends: a line per change of its progress (a JSON line per snapshot with --json), then its results; exit 1 when it failed or was cancelled")).action(
    async (arg: string, o: ConnectionOptions) => {
      const client = connect(EvaluatorServiceClient, o);
      try {
        await watchRun(client, runName(arg), o.json);
      } finally {
        client.close();
      }
    },
  );

  withConnection(evals.command("cancel <run>").description("stop a queued or running run")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(EvaluatorServiceClient, o);
    try {
      const { evaluationRun: r } = await call(client, "cancelEvaluationRun", { name: runName(arg) });
      if (o.json) printJson(EvaluationRun.toJSON(r!));
      else process.stdout.write(`cancelled ${r!.name} after ${r!.completedExampleCount + r!.failedExampleCount}/${r!.totalExampleCount} examples\n`);
    } finally {
      client.close();
    }
  });

  withConnection(
    evals
      .command("predictions <run>")
      .description("list a run's examples: reference, each model's answer (cut to fit; whole with --json) and its scores")
      .option("--width <chars>", "longest text shown in a cell", positiveInt("width"), 40),
  ).action(async (arg: string, o: ConnectionOptions & { width: number }) => {
    const client = connect(EvaluatorServiceClient, o);
    try {
      const { evaluationRun: r } = await call(client, "getEvaluationRun", { name: runName(arg) });
      const all: EvaluationExample[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listEvaluationPredictions", { parent: r!.name, pageSize: 1000, pageToken });
        all.push(...page.examples);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ examples: all.map((e) => EvaluationExample.toJSON(e)) });
      else if (all.length === 0) process.stdout.write(`no examples yet (${progressLine(r!)})\n`);
      else printPredictions(r!, all, o.width);
    } finally {
      client.close();
    }
  });

  withConnection(
    evals
      .command("compare <run-a> <run-b>")
      .description("compare two succeeded runs on the same eval set example by example: A's candidate − B's candidate, with confidence intervals and wins/ties/losses")
      .option("--metrics <list>", "the metrics to compare (default: every metric both computed)", parseMetrics),
  ).action(async (a: string, b: string, o: ConnectionOptions & { metrics?: Metric[] }) => {
    const client = connect(EvaluatorServiceClient, o);
    try {
      const res = await call(client, "compareEvaluationRuns", { candidateRun: runName(a), baselineRun: runName(b), metrics: o.metrics ?? [], bootstrapSamples: 0, confidenceLevel: 0 });
      const [{ evaluationRun: runA }, { evaluationRun: runB }] = await Promise.all([call(client, "getEvaluationRun", { name: runName(a) }), call(client, "getEvaluationRun", { name: runName(b) })]);
      if (o.json)
        printJson({
          candidateRun: runA!.name,
          baselineRun: runB!.name,
          ...(CompareEvaluationRunsResponse.toJSON(res) as object),
          // Each run's own candidate: what serving A or B would cost.
          candidateRunServing: runA!.candidateServing ? ServingStats.toJSON(runA!.candidateServing) : null,
          baselineRunServing: runB!.candidateServing ? ServingStats.toJSON(runB!.candidateServing) : null,
        });
      else printComparison(runA!, runB!, res);
    } finally {
      client.close();
    }
  });

  withRunFlags(
    evals
      .command("baseline")
      .description("does a few-shot prompt of the base model already reach your thresholds? Evaluates --model with --shots solved examples from --train on --eval, waits, and says of each --threshold whether it is met (exit 0 either way)")
      .requiredOption("--model <model>", "the base model: ID or models/ID")
      .requiredOption("--train <version>", "where the solved examples come from: DATASET@VERSION (never an eval row)")
      .requiredOption("--eval <version>", "the eval set: DATASET@VERSION")
      .option("--shots <k>", "solved examples before each prompt, 1 to 16", positiveInt("shots"), 3)
      .option("--threshold <name=value>", "a value to reach, e.g. rouge_l=0.6 (repeatable); names: rouge_l, bertscore, exact_match, format_compliance", parseThreshold),
  ).action(baselineRun);

  return evals;
}
