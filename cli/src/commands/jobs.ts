import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import { AppError, call, errorCodeTable, fineTuningMethods, fromGrpcError, lrSchedulers, qualifiedName, type ErrorCode } from "@lathe/kit";
import type { Duration } from "@lathe/proto/google/protobuf/duration";
import {
  Checkpoint,
  FineTuningEstimate,
  FineTuningJob,
  FineTuningJob_State as State,
  FineTuningMetricsRow,
  MetricsFormat,
  type FineTuningWarning,
  LearningRateScheduler,
  TrainerServiceClient,
  type WatchFineTuningJobResponse,
} from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import { FormatKind } from "@lathe/proto/lathe/type/v1/data_check";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { Metric, MetricCondition } from "@lathe/proto/lathe/type/v1/metric";
import { readFileSync } from "node:fs";
import { parseMetrics } from "./evals.js";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { list, parseLabel, positiveInt } from "../flags.js";
import { adapterName, datasetVersionName, jobId, jobName, modelName } from "../names.js";
import { formatDuration, printJson, printTable } from "../output.js";
import { addRecipeFlags, recipeFlags } from "../recipe-flags.js";

/**
 * What the flags of `jobs create` and `jobs estimate` parse to; a flag left out stays undefined.
 * The recipe's flags are under the names `recipeFlags` reads (`recipeFlagValues` makes them).
 */
export interface JobFlags extends ConnectionOptions {
  model: string;
  train: string;
  eval?: string;
  displayName?: string;
  qlora?: boolean;
  auto?: boolean;
  register?: string;
  description?: string;
  label?: Record<string, string>;
  evaluate?: boolean;
  evaluateOn?: string;
  evalMetrics?: Metric[];
  evalJsonSchema?: string;
  evalMaxTokens?: number;
  evalBaseline?: string;
  promote?: string;
  promoteIf?: MetricCondition[];
  deploy?: string;
}

/** One `--promote-if NAME=MIN_DELTA[,ci][,min=V]` condition, collected in order. */
export function parsePromoteIf(v: string, previous: MetricCondition[] = []): MetricCondition[] {
  const m = /^([a-z_]+)=([+-]?(?:\d+(?:\.\d*)?|\.\d+))((?:,ci|,min=(?:\d+(?:\.\d*)?|\.\d+))*)$/.exec(v);
  const metric = m ? parseMetrics(m[1]!)[0] : undefined;
  if (!m || metric === undefined) throw new Error(`--promote-if ${v}: expected METRIC=MIN_DELTA[,ci][,min=VALUE], e.g. rouge_l=0.02,ci (the candidate at least 2 points above its baseline, the interval above 0)`);
  const min = /,min=([0-9.]+)/.exec(m[3] ?? "")?.[1];
  return [...previous, MetricCondition.fromPartial({ metric, minDelta: Number(m[2]), requireCiAboveZero: (m[3] ?? "").includes(",ci"), ...(min === undefined ? {} : { minValue: Number(min) }) })];
}

/**
 * The flags that describe a job; the recipe's flags are `lathe train`'s. None has a default
 * here: a flag left out is left out of the request, so the trainer's defaults (the recipe's,
 * named in each help text) apply.
 */
function withJobFlags(cmd: Command): Command {
  cmd
    .requiredOption("--model <model>", "the base model: ID or models/ID")
      .requiredOption("--train <version>", "the dataset version to train on: DATASET@VERSION or datasets/D/versions/V")
      .option("--eval <version>", "a dataset version for the eval loss at the end of every epoch (or every --eval-steps) and after the last step: DATASET@VERSION")
      .option("--display-name <text>", "a human-readable name of the job")
      .option("--qlora", "QLoRA: the frozen base weights in NF4, about a quarter of LoRA's memory (default: LoRA)")
      .option("--auto", "auto hyperparameters: the trainer picks --epochs, --batch-size, --grad-accum, --lr and --warmup-ratio left out from the train set's size and token counts, by the rule in docs/training.md (default: the recipe's)");
  addRecipeFlags(cmd);
  return withConnection(
    cmd
      .option("--register <adapter>", "when the job succeeds, register its adapter as a new version of MODEL/ADAPTER (or ADAPTER of --model, or models/M/adapters/A); created when missing")
      .option("--description <text>", "with --register: the description of the new version")
      .option("--evaluate", "with --register: evaluate the new version against its baseline when it is registered (on --eval, or --evaluate-on)")
      .option("--evaluate-on <version>", "with --evaluate: the eval set, DATASET@VERSION (default: --eval)")
      .option("--eval-metrics <list>", "with --evaluate: rouge, bertscore, exact_match, format, mean_token_accuracy (default: rouge, and format with --eval-json-schema)", parseMetrics)
      .option("--eval-json-schema <file>", "with --evaluate: the JSON Schema answers must follow (the format metric)")
      .option("--eval-max-tokens <n>", "with --evaluate: most tokens per answer (default 512)", positiveInt("eval-max-tokens"))
      .option("--eval-baseline <name>", "with --evaluate: the baseline, a model, an adapter version or an alias (default: the --promote alias's version, else the base model)")
      .option("--promote <alias>", "with --evaluate: move this alias of the adapter to the new version when the evaluation meets --promote-if (or the alias's stored rule)")
      .addOption(new Option("--promote-if <metric=min_delta>", "with --promote: a condition, METRIC=MIN_DELTA[,ci][,min=VALUE], e.g. rouge_l=0.02,ci (repeatable; all must hold)").argParser(parsePromoteIf))
      .option("--deploy <deployment>", "with --promote: the gateway deployment that must serve the alias once promoted: ID or deployments/ID")
      .addOption(new Option("--label <key=value>", "a label of the job (repeatable); with --register the new version gets it too, e.g. intended-use=… for its model card").argParser(parseLabel)),
  );
}

/** The request's job from the flags. */
function jobFromFlags(o: JobFlags): FineTuningJob {
  if (o.description !== undefined && o.register === undefined) throw new Error("--description describes the registered adapter version: give --register too");
  const baseModel = modelName(o.model);
  const labels = o.label ?? {};
  const r = recipeFlags(o as unknown as Record<string, unknown>);
  const adapter = o.register === undefined ? undefined : adapterName(o.register, baseModel);
  return FineTuningJob.fromPartial({
    displayName: o.displayName ?? "",
    labels,
    baseModel,
    trainDatasetVersion: datasetVersionName(o.train),
    evalDatasetVersion: o.eval === undefined ? "" : datasetVersionName(o.eval),
    method: o.qlora ? FineTuningMethod.FINE_TUNING_METHOD_QLORA : FineTuningMethod.FINE_TUNING_METHOD_UNSPECIFIED,
    loraConfig: { r: r.r ?? 0, loraAlpha: r.loraAlpha ?? 0, loraDropout: r.loraDropout, targetModules: r.targetModules ?? [], useRslora: r.useRslora },
    trainingArguments: {
      numTrainEpochs: r.numTrainEpochs ?? 0,
      maxSteps: r.maxSteps,
      perDeviceTrainBatchSize: r.perDeviceTrainBatchSize ?? 0,
      gradientAccumulationSteps: r.gradientAccumulationSteps ?? 0,
      learningRate: r.learningRate ?? 0,
      lrSchedulerType: r.lrSchedulerType === undefined ? LearningRateScheduler.LEARNING_RATE_SCHEDULER_UNSPECIFIED : lrSchedulers.value(r.lrSchedulerType),
      warmupRatio: r.warmupRatio,
      maxSeqLength: r.maxSeqLength ?? 0,
      packing: r.packing,
      gradientCheckpointing: r.gradientCheckpointing,
      trainOnInputs: r.trainOnInputs,
      seed: r.seed,
      weightDecay: r.weightDecay,
      maxGradNorm: r.maxGradNorm,
      loggingSteps: r.loggingSteps ?? 0,
      evalSteps: r.evalSteps ?? 0,
      saveSteps: r.saveSteps ?? 0,
      saveTotalLimit: r.saveTotalLimit,
      autoHyperparameters: o.auto === true,
    },
    followUp: adapter === undefined ? undefined : followUpOf(o, adapter, labels),
  });
}

/** The follow-up the flags ask for: registration, then evaluation, promotion, deployment, each needing the one before. */
function followUpOf(o: JobFlags, adapter: string, labels: Record<string, string>): FineTuningJob["followUp"] {
  const evaluate = o.evaluate === true || o.evaluateOn !== undefined;
  for (const [flag, given] of [["--eval-metrics", o.evalMetrics], ["--eval-json-schema", o.evalJsonSchema], ["--eval-max-tokens", o.evalMaxTokens], ["--eval-baseline", o.evalBaseline], ["--promote", o.promote]] as const) {
    if (given !== undefined && !evaluate) throw new Error(`${flag} is for the evaluation after the job: give --evaluate too`);
  }
  if (o.promoteIf !== undefined && o.promote === undefined) throw new Error("--promote-if is a condition of --promote: give --promote ALIAS too");
  if (o.deploy !== undefined && o.promote === undefined) throw new Error("--deploy serves the promoted alias: give --promote ALIAS too");
  if (evaluate && o.evaluateOn === undefined && o.eval === undefined) throw new Error("--evaluate needs an eval set: give --eval or --evaluate-on");
  let schema: string | undefined;
  if (o.evalJsonSchema !== undefined) {
    try {
      schema = readFileSync(o.evalJsonSchema, "utf8");
    } catch (err) {
      throw new Error(`--eval-json-schema ${o.evalJsonSchema}: cannot read it: ${(err as Error).message}`);
    }
  }
  const metrics = o.evalMetrics ?? (schema === undefined ? [] : [Metric.METRIC_ROUGE_L, Metric.METRIC_FORMAT_COMPLIANCE]);
  return FollowUp.fromPartial({
    registration: { adapter, description: o.description ?? "", labels },
    ...(evaluate
      ? {
          evaluation: {
            evalDatasetVersion: o.evaluateOn === undefined ? "" : datasetVersionName(o.evaluateOn),
            metrics,
            formatCheck: schema === undefined ? undefined : { kind: FormatKind.FORMAT_KIND_JSON_SCHEMA, pattern: "", jsonSchema: schema },
            baseline: o.evalBaseline === undefined ? "" : baselineName(o.evalBaseline, adapter),
            generationParams: o.evalMaxTokens === undefined ? undefined : { maxTokens: o.evalMaxTokens, stop: [] },
            maxExamples: 0,
          },
        }
      : {}),
    ...(o.promote !== undefined ? { promotion: { alias: o.promote, conditions: o.promoteIf ?? [] } } : {}),
    ...(o.deploy !== undefined ? { deployment: { deployment: qualifiedName("deployments", o.deploy) } } : {}),
  });
}

/** `--eval-baseline`: a model (`tiny`, `models/tiny`), a version (`ADAPTER@3`) or an alias (`ADAPTER@prod`) of the registered adapter's model, or a resource name. */
function baselineName(v: string, adapter: string): string {
  if (v.startsWith("models/")) return v;
  const at = v.indexOf("@");
  if (at < 0) return modelName(v);
  const a = adapterName(v.slice(0, at), adapter.split("/").slice(0, 2).join("/"));
  const ref = v.slice(at + 1);
  return /^[1-9][0-9]*$/.test(ref) ? `${a}/versions/${ref}` : `${a}/aliases/${ref}`;
}

const seconds = (d: Duration | undefined) => (d === undefined ? Number.NaN : d.seconds + d.nanos / 1e9);
const stateText = (s: State) => (State[s] ?? String(s)).replace("STATE_", "").toLowerCase();
const terminal = (s: State) => s === State.STATE_SUCCEEDED || s === State.STATE_FAILED || s === State.STATE_CANCELLED;
const loss = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(4));
const accuracy = (x: number | undefined) => (x === undefined ? "-" : `${(x * 100).toFixed(1)}%`);
const count = (n: number) => n.toLocaleString("en-US");
// Decimal units, as hardware is named (nvidia-a100-40gb has 40e9 bytes).
const bytes = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);

/** The estimate for the hardware the job runs on, or the recommended one. */
function plannedHardware(j: FineTuningJob) {
  const e = j.estimate;
  return e?.hardwareEstimates.find((h) => h.hardware === (j.compute?.hardware || e.recommendedHardware));
}

/** How far a job has come: its estimate while it waits, then its progress. */
function progressText(j: FineTuningJob): string {
  const p = j.progress;
  if (p === undefined || p.totalSteps === 0) {
    if (terminal(j.state)) return "";
    const h = plannedHardware(j);
    return h ? `estimated ${j.estimate!.totalSteps} steps, ${formatDuration(seconds(h.duration))} on ${h.hardware}` : "";
  }
  const done = `step ${p.step}/${p.totalSteps}  epoch ${p.epoch.toFixed(2)}`;
  // A finished job's losses are in its result: the last snapshot's eval loss predates the final evaluation.
  if (terminal(j.state)) return done;
  return `${done}  loss ${loss(p.loss)}  eval loss ${loss(p.evalLoss)}  accuracy ${accuracy(p.meanTokenAccuracy)}  lr ${p.learningRate.toExponential(2)}  ${count(Math.round(p.tokensPerSecond))} tok/s  eta ${formatDuration(seconds(p.eta))}`;
}

/** One line of `jobs watch`: the state and, once it trains, the progress. */
function snapshotLine(j: FineTuningJob): string {
  return `${stateText(j.state).padEnd(9)} ${progressText(j)}`.trimEnd();
}

/** What a succeeded job left: its adapter and losses, and the adapter version once the registry made it. */
function printOutcome(j: FineTuningJob, out: NodeJS.WritableStream = process.stdout): void {
  if (j.state !== State.STATE_SUCCEEDED || !j.result) return;
  const r = j.result;
  out.write(`${j.name} succeeded after ${formatDuration(seconds(r.trainingDuration))} of training (${j.attemptCount} attempt${j.attemptCount === 1 ? "" : "s"})\n`);
  out.write(`  adapter           ${r.adapterArtifactDigest}\n`);
  out.write(`  final loss        ${loss(r.finalLoss)}, eval loss ${loss(r.finalEvalLoss)}\n`);
  out.write(`  token accuracy    ${accuracy(r.finalMeanTokenAccuracy)}, eval ${accuracy(r.finalEvalMeanTokenAccuracy)}\n`);
  const vs = estimateAgainstActual(r);
  if (vs) out.write(`  time              ${vs}\n`);
  out.write(`  trainable params  ${count(r.trainableParameterCount)}\n`);
  out.write(`  checkpoint        ${r.checkpoint}${r.bestCheckpoint && r.bestCheckpoint !== r.checkpoint ? ` (lowest eval loss: ${r.bestCheckpoint})` : ""}\n`);
  const reg = j.followUp?.registration?.adapter;
  if (j.adapterVersion !== "") out.write(`  adapter version   ${j.adapterVersion}\n`);
  else if (reg) out.write(`  adapter version   pending: the registry is registering it under ${reg} (see lathe jobs get ${jobId(j.name)})\n`);
}

/** A finished job's estimate against what it took: duration and throughput. */
function estimateAgainstActual(r: NonNullable<FineTuningJob["result"]>): string {
  const actual = `took ${formatDuration(seconds(r.trainingDuration))} at ${count(Math.round(r.tokensPerSecond))} tok/s`;
  if (r.estimatedDuration === undefined) return actual;
  return `${actual}; estimated ${formatDuration(seconds(r.estimatedDuration))} at ${count(Math.round(r.estimatedTokensPerSecond))} tok/s (${r.estimatedTokensPerSecondSource || "cost table"})`;
}

/** A job that did not succeed, as the error `lathe` prints and exits 1 on. */
function notSucceeded(j: FineTuningJob): Error | undefined {
  const step = j.progress?.step ?? 0;
  if (j.state === State.STATE_FAILED) {
    const e = j.error;
    const code = (e?.code ?? "") in errorCodeTable ? (e!.code as ErrorCode) : "INTERNAL";
    return new AppError(code, e?.reason || code, `${j.name} failed at step ${step}: ${e?.message ?? "no reason given"}`, e?.metadata ?? {});
  }
  if (j.state === State.STATE_CANCELLED) return new Error(`${j.name} was cancelled at step ${step}${j.cancelReason ? ` (${j.cancelReason})` : ""}; its checkpoints are kept`);
  return undefined;
}

/**
 * Streams a job until it is terminal: a line per state change, logged step and new eval loss
 * (or a JSON line per snapshot with `json`), then the outcome. Rejects with the job's error when
 * it failed or was cancelled.
 */
async function watchJob(client: TrainerServiceClient, name: string, json: boolean | undefined): Promise<FineTuningJob> {
  const last = await new Promise<FineTuningJob | undefined>((resolve, reject) => {
    let seen: FineTuningJob | undefined;
    let printed: FineTuningJob | undefined;
    // Training may take hours: no deadline on the stream.
    const stream = client.watchFineTuningJob({ name }, { deadline: Infinity });
    stream.on("data", (m: WatchFineTuningJobResponse) => {
      const j = m.fineTuningJob!;
      seen = j;
      if (json) {
        process.stdout.write(`${JSON.stringify(FineTuningJob.toJSON(j))}\n`);
        return;
      }
      // The server sends logged steps, checkpoints and state changes; an epoch's eval loss
      // arrives with its checkpoint, after the step it belongs to was printed.
      const p = j.progress;
      const before = printed?.progress;
      if (printed !== undefined && j.state === printed.state && p?.step === before?.step) {
        if (p !== undefined && p.evalLoss !== before?.evalLoss) process.stdout.write(`${"evaluated".padEnd(9)} step ${p.step}/${p.totalSteps}  eval loss ${loss(p.evalLoss)}\n`);
      } else process.stdout.write(`${snapshotLine(j)}\n`);
      printed = j;
    });
    stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    stream.on("end", () => resolve(seen));
  });
  if (!last) throw new Error(`the stream of ${name} ended before it sent the job`);
  if (!terminal(last.state)) throw new Error(`the stream of ${name} ended while the job is ${stateText(last.state)}; watch it again with lathe jobs watch ${name}`);
  if (!json) printOutcome(last);
  const failed = notSucceeded(last);
  if (failed) throw failed;
  return last;
}

/** `lathe jobs get`: the job as a person reads it. */
function printJob(j: FineTuningJob): void {
  const rows: [string, string][] = [
    ["name", j.name],
    ["state", stateText(j.state)],
    ["base model", j.baseModel],
    ["train", j.trainDatasetVersion],
    ["eval", j.evalDatasetVersion || "-"],
  ];
  if (j.displayName && j.displayName !== jobId(j.name)) rows.push(["display name", j.displayName]);
  const l = j.loraConfig;
  const method = fineTuningMethods.name(j.method) === "qlora" ? "QLoRA" : "LoRA";
  if (l) rows.push(["adapter", `${method} r ${l.r}, alpha ${l.loraAlpha}${l.useRslora ? " (rsLoRA)" : ""}, dropout ${l.loraDropout ?? "-"}, ${l.targetModules.join(",")}`]);
  const a = j.trainingArguments;
  if (a) rows.push(["training", `${a.maxSteps ? `${a.maxSteps} steps` : `${a.numTrainEpochs} epochs`}${a.autoHyperparameters ? " (auto hyperparameters)" : ""}, batch ${a.perDeviceTrainBatchSize} × ${a.gradientAccumulationSteps}, lr ${a.learningRate} ${lrSchedulers.name(a.lrSchedulerType) ?? ""}, max_seq_length ${a.maxSeqLength}${a.packing ? ", packing" : ""}, seed ${a.seed ?? "-"}`]);
  if (Object.keys(j.labels).length > 0) rows.push(["labels", Object.entries(j.labels).map(([k, v]) => `${k}=${v}`).join(", ")]);
  rows.push(["created", j.createTime?.toISOString() ?? ""]);
  if (j.startTime) rows.push(["started", j.startTime.toISOString()]);
  if (j.endTime) rows.push(["ended", j.endTime.toISOString()]);
  if (j.worker) rows.push(["worker", `${j.worker} (attempt ${j.attemptCount})`]);
  rows.push(["progress", progressText(j) || "-"]);
  if (j.result) {
    rows.push(["adapter digest", j.result.adapterArtifactDigest]);
    rows.push(["final loss", `${loss(j.result.finalLoss)}, eval loss ${loss(j.result.finalEvalLoss)}`]);
    rows.push(["token accuracy", `${accuracy(j.result.finalMeanTokenAccuracy)}, eval ${accuracy(j.result.finalEvalMeanTokenAccuracy)}`]);
    rows.push(["time", estimateAgainstActual(j.result)]);
  }
  const reg = j.followUp?.registration?.adapter;
  if (j.adapterVersion) rows.push(["adapter version", j.adapterVersion]);
  else if (reg) rows.push(["registers as", reg]);
  if (j.evaluationRun) rows.push(["evaluation run", j.evaluationRun]);
  for (const w of j.estimate?.warnings ?? []) rows.push(["warning", `${w.field}: ${w.message}`]);
  if (j.error) rows.push(["error", `${j.error.message} (${j.error.code}, ${j.error.reason})`]);
  if (j.cancelReason) rows.push(["cancel reason", j.cancelReason]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
}

/**
 * The trainer's warnings about a job (what will make it train worse than meant), on stderr so
 * `--json` output stays one document.
 */
function printWarnings(warnings: readonly FineTuningWarning[]): void {
  for (const w of warnings) process.stderr.write(`lathe: warning: ${w.field}: ${w.message} (${w.reason})\n`);
}

/** `lathe jobs estimate`: the estimate and a row per hardware type. */
function printEstimate(e: FineTuningEstimate): void {
  process.stdout.write(`rows ${count(e.trainRowCount)} (${e.truncatedRowCount} truncated), ${count(e.tokensPerEpoch)} tokens per epoch (${count(e.trainedTokensPerEpoch)} trained), ${count(e.sequencesPerEpoch)} sequences per epoch\n`);
  process.stdout.write(`steps ${count(e.stepsPerEpoch)} per epoch, ${count(e.totalSteps)} in all; ${count(e.totalTokens)} tokens in all; ${count(e.trainableParameterCount)} trainable parameters\n`);
  printTable(
    e.hardwareEstimates.map((h) => ({
      hardware: h.hardware,
      gpus: String(h.gpuCount),
      "tokens/s": count(Math.round(h.tokensPerSecond)),
      "tokens/s from": h.tokensPerSecondSource || "cost table",
      duration: formatDuration(seconds(h.duration)),
      "peak memory": bytes(h.peakMemoryBytes),
      available: bytes(h.availableMemoryBytes),
      fits: h.fits ? "yes" : "no",
      cost: `${h.cost > 0 && h.cost < 0.01 ? "<0.01" : h.cost.toFixed(2)} ${h.currencyCode}`,
    })),
    ["hardware", "gpus", "tokens/s", "tokens/s from", "duration", "peak memory", "available", "fits", "cost"],
  );
  process.stdout.write(e.recommendedHardware ? `recommended: ${e.recommendedHardware}\n` : "recommended: none (the job fits on none of these; lower --batch-size or --max-seq-length, or use --qlora)\n");
}

/** How `jobs create` creates: the job's id and idempotency key, whether to follow it, where to connect. */
export type CreateJobOptions = ConnectionOptions & { id?: string; requestId?: string; watch?: boolean };

/**
 * `lathe jobs create`: creates the job the flags describe and prints it; with `watch`, follows it
 * until it ends as `jobs watch` does, rejecting when it failed or was cancelled.
 */
export async function createJob(flags: JobFlags, o: CreateJobOptions): Promise<void> {
  const job = jobFromFlags(flags);
  const client = connect(TrainerServiceClient, o);
  try {
    const { fineTuningJob: created, warnings } = await call(client, "createFineTuningJob", { fineTuningJobId: o.id ?? "", fineTuningJob: job, requestId: o.requestId ?? "" });
    printWarnings(warnings);
    if (!o.watch) {
      if (o.json) printJson(FineTuningJob.toJSON(created!));
      else {
        const progress = progressText(created!);
        process.stdout.write(`created ${created!.name} (${stateText(created!.state)}${progress ? `, ${progress}` : ""})\nfollow it with: lathe jobs watch ${jobId(created!.name)}\n`);
      }
      return;
    }
    if (!o.json) process.stdout.write(`created ${created!.name}\n`);
    await watchJob(client, created!.name, o.json);
  } finally {
    client.close();
  }
}

/** `lathe jobs get`: prints the job JOB (ID or fineTuningJobs/ID), or its JSON. */
export async function getJob(job: string, o: ConnectionOptions): Promise<void> {
  const client = connect(TrainerServiceClient, o);
  try {
    const { fineTuningJob } = await call(client, "getFineTuningJob", { name: jobName(job) });
    if (o.json) printJson(FineTuningJob.toJSON(fineTuningJob!));
    else printJob(fineTuningJob!);
  } finally {
    client.close();
  }
}

/** `lathe jobs …`: fine-tuning jobs on the trainer service. */
export function jobsCommand(): Command {
  const jobs = new Command("jobs").description("create, watch and cancel fine-tuning jobs; list their checkpoints and metrics; estimate their cost");

  withJobFlags(
    jobs
      .command("create")
      .description("queue a fine-tuning job of --model on --train; flags left out take the trainer's defaults")
      .option("--id <id>", "the job's id: lowercase letters, digits and - (default: one the server makes)")
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the job the first call created")
      .option("--watch", "then follow the job until it ends, as jobs watch does (exit 1 when it fails or is cancelled)"),
  ).action((o: JobFlags & CreateJobOptions) => createJob(o, o));

  withConnection(jobs.command("get <job>").description("show a job: JOB is ID or fineTuningJobs/ID")).action(getJob);

  withConnection(
    jobs
      .command("list")
      .description("list your jobs, newest first")
      .option("--filter <filter>", 'e.g. state = STATE_RUNNING AND labels.team = "support"; fields: state, method, base_model, train_dataset_version, labels.<key>'),
  ).action(async (o: ConnectionOptions & { filter?: string }) => {
    const client = connect(TrainerServiceClient, o);
    try {
      const all: FineTuningJob[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listFineTuningJobs", { pageSize: 1000, pageToken, filter: o.filter ?? "" });
        all.push(...page.fineTuningJobs);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ fineTuningJobs: all.map((j) => FineTuningJob.toJSON(j)) });
      else if (all.length === 0) process.stdout.write("no jobs\n");
      else
        printTable(
          all.map((j) => ({
            name: j.name,
            state: stateText(j.state),
            "base model": j.baseModel,
            train: j.trainDatasetVersion,
            step: j.progress ? `${j.progress.step}/${j.progress.totalSteps}` : "",
            loss: j.result ? loss(j.result.finalLoss) : j.progress?.step ? loss(j.progress.loss) : "",
            "adapter version": j.adapterVersion,
            created: j.createTime?.toISOString() ?? "",
          })),
          ["name", "state", "base model", "train", "step", "loss", "adapter version", "created"],
        );
    } finally {
      client.close();
    }
  });

  withConnection(jobs.command("watch <job>").description("follow a job until it ends: a line per logged step and evaluation (a JSON line per snapshot with --json), then its adapter; exit 1 when it failed or was cancelled")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(TrainerServiceClient, o);
    try {
      await watchJob(client, jobName(arg), o.json);
    } finally {
      client.close();
    }
  });

  withConnection(
    jobs
      .command("cancel <job>")
      .description("stop a queued or running job; its checkpoints are kept")
      .option("--reason <text>", "why", ""),
  ).action(async (arg: string, o: ConnectionOptions & { reason: string }) => {
    const client = connect(TrainerServiceClient, o);
    try {
      const { fineTuningJob: j } = await call(client, "cancelFineTuningJob", { name: jobName(arg), reason: o.reason });
      if (o.json) printJson(FineTuningJob.toJSON(j!));
      else process.stdout.write(`cancelled ${j!.name} at step ${j!.progress?.step ?? 0}; its checkpoints are kept\n`);
    } finally {
      client.close();
    }
  });

  withConnection(jobs.command("checkpoints <job>").description("list the checkpoints a job saved, by step")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(TrainerServiceClient, o);
    try {
      const all: Checkpoint[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listCheckpoints", { parent: jobName(arg), pageSize: 1000, pageToken });
        all.push(...page.checkpoints);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ checkpoints: all.map((c) => Checkpoint.toJSON(c)) });
      else if (all.length === 0) process.stdout.write("no checkpoints\n");
      else
        printTable(
          all.map((c) => ({
            name: c.name,
            step: String(c.step),
            epoch: c.epoch.toFixed(2),
            loss: loss(c.loss),
            "eval loss": loss(c.evalLoss),
            accuracy: accuracy(c.meanTokenAccuracy),
            "eval accuracy": accuracy(c.evalMeanTokenAccuracy),
            size: bytes(c.sizeBytes),
            resumable: c.resumable ? "yes" : "no",
            digest: c.artifactDigest.slice(0, 19),
          })),
          ["name", "step", "epoch", "loss", "eval loss", "accuracy", "eval accuracy", "size", "resumable", "digest"],
        );
    } finally {
      client.close();
    }
  });

  withConnection(
    jobs
      .command("metrics <job>")
      .description("a job's metrics, one row per logged step: a table, or CSV (--csv), JSON (--json), or a TensorBoard event file (--tensorboard DIR)")
      .option("--csv", "print CSV: step, epoch, train_loss, eval_loss, learning_rate, grad_norm, tokens_per_second, processed_tokens, train/eval mean token accuracy, log_time")
      .option("--tensorboard <dir>", "write the job's TensorBoard event file (events.out.tfevents.…) into DIR, for tensorboard --logdir DIR"),
  ).action(async (arg: string, o: ConnectionOptions & { csv?: boolean; tensorboard?: string }) => {
    const chosen = [o.csv ? "--csv" : "", o.json ? "--json" : "", o.tensorboard !== undefined ? "--tensorboard" : ""].filter((f) => f !== "");
    if (chosen.length > 1) throw new Error(`jobs metrics: ${chosen.join(" and ")} each choose the output; give one`);
    const format = o.csv ? MetricsFormat.METRICS_FORMAT_CSV : o.tensorboard !== undefined ? MetricsFormat.METRICS_FORMAT_TENSORBOARD : MetricsFormat.METRICS_FORMAT_UNSPECIFIED;
    const client = connect(TrainerServiceClient, o);
    try {
      const m = await call(client, "getFineTuningJobMetrics", { name: jobName(arg), format });
      if (o.csv) process.stdout.write(m.content.toString());
      else if (o.tensorboard !== undefined) {
        const dir = resolve(o.tensorboard);
        await mkdir(dir, { recursive: true });
        const file = join(dir, m.fileName);
        await writeFile(file, m.content);
        process.stdout.write(`wrote ${file} (${m.rows.length} logged step${m.rows.length === 1 ? "" : "s"}); view it with: tensorboard --logdir ${dir}\n`);
      } else if (o.json) printJson({ rows: m.rows.map((r) => FineTuningMetricsRow.toJSON(r)) });
      else if (m.rows.length === 0) process.stdout.write("no logged steps yet\n");
      else
        printTable(
          m.rows.map((r) => ({
            step: String(r.step),
            epoch: r.epoch.toFixed(2),
            loss: loss(r.trainLoss),
            "eval loss": loss(r.evalLoss),
            accuracy: accuracy(r.trainMeanTokenAccuracy),
            "eval accuracy": accuracy(r.evalMeanTokenAccuracy),
            lr: r.learningRate.toExponential(2),
            "grad norm": r.gradNorm.toFixed(3),
            "tok/s": count(Math.round(r.tokensPerSecond)),
          })),
          ["step", "epoch", "loss", "eval loss", "accuracy", "eval accuracy", "lr", "grad norm", "tok/s"],
        );
    } finally {
      client.close();
    }
  });

  withJobFlags(
    jobs
      .command("estimate")
      .description("estimate tokens, steps, time, memory and cost of a job without creating it (same flags as create)")
      .option("--hardware <list>", "comma-separated hardware types of the cost table, e.g. nvidia-a100-40gb,nvidia-h100-80gb (default: all)", list),
  ).action(async (o: JobFlags & { hardware?: string[] }) => {
    const job = jobFromFlags(o);
    const client = connect(TrainerServiceClient, o);
    try {
      const { estimate, warnings, trainingArguments: a } = await call(client, "estimateFineTuningJob", { fineTuningJob: job, hardware: o.hardware ?? [] });
      printWarnings(warnings);
      if (o.json) printJson(FineTuningEstimate.toJSON(estimate!));
      else {
        if (a?.autoHyperparameters) process.stdout.write(`auto hyperparameters: ${a.numTrainEpochs} epochs, batch ${a.perDeviceTrainBatchSize} × ${a.gradientAccumulationSteps}, lr ${a.learningRate}, warmup_ratio ${a.warmupRatio ?? 0}\n`);
        printEstimate(estimate!);
      }
    } finally {
      client.close();
    }
  });

  return jobs;
}
