import { existsSync, readFileSync } from "node:fs";
import type { ReadStream, WriteStream } from "node:tty";
import { Command, Option } from "commander";
import { AppError, call, chatRoles, errorCodeTable, fromGrpcError, qualifiedName, type ErrorCode } from "@lathe/kit";
import { parseTrainingLine } from "@lathe/models";
import { Dataset, DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import {
  GenerationJob,
  GenerationJob_State as State,
  GenerationProgress,
  ReviewItem,
  ReviewItem_State as ItemState,
  SynthGenServiceClient,
  type WatchGenerationJobResponse,
} from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import type { ChatExample } from "@lathe/proto/lathe/type/v1/chat";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { nonNegativeInt, number, parseLabel, positiveInt } from "../flags.js";
import { datasetName, datasetVersionName, lastId } from "../names.js";
import { printJson, printTable } from "../output.js";
import { printable, reviewInteractively } from "./synth-review.js";

/** `ID` or `generationJobs/ID` → `generationJobs/ID`. */
export const generationJobName = (arg: string): string => qualifiedName("generationJobs", arg);

/** A review item of `job` as `--reject` takes it: its id, or its full name. */
export const reviewItemName = (job: string, arg: string): string => (arg.startsWith("generationJobs/") ? arg : `${job}/reviewItems/${arg}`);

/** The most few-shot examples a job shows the teacher (GenerationJob.few_shot_examples). */
const MAX_FEW_SHOT = 20;

/**
 * The chat rows of a JSONL file, as the few-shot examples of a job. A row that is not a chat
 * conversation (`{"messages": [...]}` ending with the assistant) is an error naming its line.
 */
export function readExamples(path: string): ChatExample[] {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new Error(`--examples ${path}: cannot read it: ${(err as Error).message}`);
  }
  const examples: ChatExample[] = [];
  let start = 0;
  for (let line = 1; start < bytes.length; line++) {
    const nl = bytes.indexOf(0x0a, start);
    const end = nl < 0 ? bytes.length : nl;
    let row = bytes.subarray(start, end);
    start = end + 1;
    if (row.at(-1) === 0x0d) row = row.subarray(0, -1);
    if (row.toString("utf8").trim() === "") continue;
    const r = parseTrainingLine(row, { format: "chat" });
    if (!r.ok) throw new Error(`--examples ${path}:${line}: ${r.reason}`);
    examples.push({ messages: r.example.messages.map((m) => ({ role: chatRoles.value(m.role)!, content: m.content })) });
  }
  if (examples.length === 0) throw new Error(`--examples ${path}: no rows; expected JSONL rows like {"messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]}`);
  if (examples.length > MAX_FEW_SHOT) throw new Error(`--examples ${path}: ${examples.length} rows; the teacher is shown at most ${MAX_FEW_SHOT}: keep your best ones, and give the whole set as --examples D@V to drop duplicates of it`);
  return examples;
}

/**
 * What the `--examples` flags give: rows of a local file to show the teacher, and a dataset version
 * (`D@V`) whose rows the teacher is shown when no file is given and whose duplicates are dropped.
 */
export function examplesOf(specs: readonly string[]): { fewShot: ChatExample[]; seedVersion: string } {
  let file: string | undefined;
  let version: string | undefined;
  for (const spec of specs) {
    const isVersion = spec.startsWith("datasets/") || (!existsSync(spec) && /^[^/@]+@[^/@]+$/.test(spec));
    if (!isVersion && !existsSync(spec)) throw new Error(`--examples ${spec}: no such file, and not a dataset version DATASET@VERSION`);
    if (isVersion ? version !== undefined : file !== undefined) throw new Error(`--examples: give at most one ${isVersion ? "dataset version" : "file"} (a FILE.jsonl and a D@V may go together)`);
    if (isVersion) version = spec;
    else file = spec;
  }
  return { fewShot: file === undefined ? [] : readExamples(file), seedVersion: version === undefined ? "" : datasetVersionName(version) };
}

/** `--teacher-key-env VAR` → `env:VAR`: the synthgen service reads the key from its own environment. */
export function keySecretOf(variable: string | undefined): string {
  if (variable === undefined) return "";
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(variable)) throw new Error(`--teacher-key-env ${variable}: expected the name of an environment variable (letters, digits and _), not the key itself`);
  return `env:${variable}`;
}

// ---- what the commands print ----

const stateText = (s: State) => (State[s] ?? String(s)).replace("STATE_", "").toLowerCase();
const itemStateText = (s: ItemState) => (ItemState[s] ?? String(s)).replace("STATE_", "").toLowerCase();
const terminal = (s: State) => s === State.STATE_SUCCEEDED || s === State.STATE_FAILED || s === State.STATE_CANCELLED;
const count = (n: number) => n.toLocaleString("en-US");
const usd = (v: number) => `${v.toFixed(4)} USD`;
const progressOf = (j: GenerationJob) => j.progress ?? GenerationProgress.fromPartial({});

/** Dropped examples in all and by reason, most frequent first: `4 (duplicate_generated 3, pii 1)`. */
function rejectedText(p: GenerationProgress): string {
  const total = p.failedCheckCount + p.duplicateCount;
  const reasons = [...p.rejections].filter((r) => r.count > 0).sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));
  return reasons.length === 0 ? String(total) : `${total} (${reasons.map((r) => `${r.reason} ${r.count}`).join(", ")})`;
}

const costText = (p: GenerationProgress) => (p.cost === undefined ? "no price configured" : usd(p.cost));

/**
 * One line of `synth watch`: `running: generated 12, accepted 8/50, rejected 4 (duplicate_generated
 * 3, pii 1), review pending 1, tokens 12,345, cost 0.0123 USD`.
 */
export function progressLine(j: GenerationJob): string {
  const p = progressOf(j);
  return (
    `${stateText(j.state)}: generated ${p.generatedCount}, accepted ${p.acceptedCount}/${j.targetCount}, rejected ${rejectedText(p)}, ` +
    `review pending ${p.reviewPendingCount}, tokens ${count(p.promptTokens + p.completionTokens)}, cost ${p.cost === undefined ? "-" : usd(p.cost)}`
  );
}

/** The dataset version as the CLI takes it back: `D@V`. */
const versionText = (name: string) => {
  const m = /^datasets\/([^/]+)\/versions\/([^/]+)$/.exec(name);
  return m ? `${m[1]}@${m[2]}` : name;
};

/** What `synth get` and the end of `synth create --watch` print. */
export function printJob(j: GenerationJob, out: NodeJS.WritableStream = process.stdout): void {
  const p = progressOf(j);
  const t = j.teacher;
  const rows: [string, string][] = [
    ["name", j.name],
    ["state", stateText(j.state)],
    ["teacher", t ? `${t.model} at ${t.baseUrl}${t.apiKeySecret ? ` (key from ${t.apiKeySecret})` : ""}` : "-"],
    ["task", shortLine(j.taskDescription, 100)],
  ];
  if (j.fewShotExamples.length > 0) rows.push(["examples", `${j.fewShotExamples.length} shown to the teacher`]);
  if (j.seedDatasetVersion) rows.push(["seed set", `${versionText(j.seedDatasetVersion)}${j.fewShotExamples.length === 0 ? " (3 rows shown per request; duplicates dropped)" : " (duplicates dropped)"}`]);
  rows.push(["accepted", `${p.acceptedCount} of ${j.targetCount}`]);
  rows.push(["generated", `${p.generatedCount} from ${p.teacherRequestCount} requests${j.maxTeacherRequests ? ` (at most ${j.maxTeacherRequests})` : ""}`]);
  rows.push(["rejected", rejectedText(p)]);
  rows.push(["review", `${p.reviewCount} sampled${j.reviewSampleFraction !== undefined ? ` (${Number((j.reviewSampleFraction * 100).toFixed(1))}%)` : ""}: ${p.reviewPendingCount} pending, ${p.reviewApprovedCount} approved, ${p.reviewRejectedCount} rejected`]);
  rows.push(["tokens", `${count(p.promptTokens)} in / ${count(p.completionTokens)} out${j.maxTotalTokens ? ` (at most ${count(j.maxTotalTokens)})` : ""}`]);
  rows.push(["cost", `${costText(p)}${j.maxCost !== undefined ? ` (at most ${usd(j.maxCost)})` : ""}`]);
  if (j.publishedDatasetVersion) rows.push(["published", versionText(j.publishedDatasetVersion)]);
  if (j.displayName) rows.push(["display name", j.displayName]);
  if (Object.keys(j.labels).length > 0) rows.push(["labels", Object.entries(j.labels).map(([k, v]) => `${k}=${v}`).join(", ")]);
  rows.push(["created", j.createTime?.toISOString() ?? ""]);
  if (j.endTime) rows.push(["ended", j.endTime.toISOString()]);
  if (j.error) rows.push(["error", `${j.error.message} (${j.error.code}, ${j.error.reason})`]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.write(`${k.padEnd(width)}  ${v}\n`);
}

/** At most `max` characters of a text on one line, `…` where it was cut. */
function shortLine(text: string, max: number): string {
  const one = printable(text).replace(/\s+/g, " ").trim();
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`;
}

/** What to do next with an ended job, for a person. */
function nextSteps(j: GenerationJob): string {
  const id = lastId(j.name);
  const p = progressOf(j);
  if (j.publishedDatasetVersion || p.acceptedCount === 0) return "";
  if (p.reviewPendingCount > 0) return `review the ${p.reviewPendingCount} sampled examples: lathe synth review ${id}\nthen publish: lathe synth publish ${id} --dataset NAME\n`;
  return `publish: lathe synth publish ${id} --dataset NAME\n`;
}

/** A job that did not succeed, as the error `lathe` prints and exits 1 on. */
function notSucceeded(j: GenerationJob): Error | undefined {
  const done = `${progressOf(j).acceptedCount}/${j.targetCount} accepted examples`;
  if (j.state === State.STATE_FAILED) {
    const e = j.error;
    const code = (e?.code ?? "") in errorCodeTable ? (e!.code as ErrorCode) : "INTERNAL";
    return new AppError(code, e?.reason || code, `${j.name} failed after ${done}: ${e?.message ?? "no reason given"}`, e?.metadata ?? {});
  }
  if (j.state === State.STATE_CANCELLED) return new Error(`${j.name} was cancelled after ${done}; what it made can still be reviewed and published`);
  return undefined;
}

/**
 * Streams a job until it ends: a progress line whenever it changes, or a JSON line per snapshot
 * with `json`. Then, for a person, the job's summary; rejects when it failed or was cancelled.
 */
async function watchJob(client: SynthGenServiceClient, name: string, json: boolean | undefined): Promise<GenerationJob> {
  const last = await new Promise<GenerationJob | undefined>((resolve, reject) => {
    let seen: GenerationJob | undefined;
    let printed = "";
    // A large job may run for hours: no deadline on the stream.
    const stream = client.watchGenerationJob({ name }, { deadline: Infinity });
    stream.on("data", (m: WatchGenerationJobResponse) => {
      const j = m.generationJob!;
      seen = j;
      if (json) process.stdout.write(`${JSON.stringify(GenerationJob.toJSON(j))}\n`);
      else {
        const line = progressLine(j);
        if (line !== printed) process.stdout.write(`${line}\n`);
        printed = line;
      }
    });
    stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
    stream.on("end", () => resolve(seen));
  });
  if (!last) throw new Error(`the stream of ${name} ended before it sent the job`);
  if (!terminal(last.state)) throw new Error(`the stream of ${name} ended while the job is ${stateText(last.state)}; watch it again with lathe synth watch ${lastId(name)}`);
  if (!json) {
    process.stdout.write("\n");
    printJob(last);
    process.stdout.write(nextSteps(last));
  }
  const failed = notSucceeded(last);
  if (failed) throw failed;
  return last;
}

interface CreateFlags extends ConnectionOptions {
  task?: string;
  taskFile?: string;
  examples: string[];
  count: number;
  teacherUrl: string;
  teacherModel: string;
  teacherKeyEnv?: string;
  concurrency?: number;
  rpm?: number;
  temperature?: number;
  maxTokens?: number;
  seed?: number;
  reviewFraction?: number;
  maxRequests?: number;
  maxTokensBudget?: number;
  maxCost?: number;
  displayName?: string;
  id?: string;
  label?: Record<string, string>;
  requestId?: string;
  watch?: boolean;
}

/** The task description from `--task` or `--task-file`. */
function taskOf(o: CreateFlags): string {
  if ((o.task === undefined) === (o.taskFile === undefined)) throw new Error("give the task as --task TEXT or --task-file FILE (one of them)");
  if (o.task !== undefined) return o.task;
  try {
    return readFileSync(o.taskFile!, "utf8");
  } catch (err) {
    throw new Error(`--task-file ${o.taskFile}: cannot read it: ${(err as Error).message}`);
  }
}

/** The job the flags describe; the server checks the ranges and the rest. */
export function jobOf(o: CreateFlags): GenerationJob {
  const { fewShot, seedVersion } = examplesOf(o.examples);
  if (fewShot.length === 0 && seedVersion === "") throw new Error("--examples: give a FILE.jsonl of chat rows to show the teacher, or a dataset version D@V of real examples");
  const params = o.temperature !== undefined || o.maxTokens !== undefined || o.seed !== undefined ? { temperature: o.temperature, maxTokens: o.maxTokens, seed: o.seed, stop: [] } : undefined;
  return GenerationJob.fromPartial({
    displayName: o.displayName ?? "",
    labels: o.label ?? {},
    teacher: {
      baseUrl: o.teacherUrl,
      model: o.teacherModel,
      apiKeySecret: keySecretOf(o.teacherKeyEnv),
      maxConcurrentRequests: o.concurrency ?? 0,
      requestsPerMinute: o.rpm ?? 0,
    },
    taskDescription: taskOf(o),
    fewShotExamples: fewShot,
    seedDatasetVersion: seedVersion,
    targetCount: o.count,
    generationParams: params,
    reviewSampleFraction: o.reviewFraction,
    maxTeacherRequests: o.maxRequests ?? 0,
    maxTotalTokens: o.maxTokensBudget ?? 0,
    maxCost: o.maxCost,
  });
}

/** `lathe synth create`: creates the job, and prints it or follows it. */
async function createJob(o: CreateFlags): Promise<void> {
  const job = jobOf(o);
  const client = connect(SynthGenServiceClient, o);
  try {
    const { generationJob: created } = await call(client, "createGenerationJob", { generationJobId: o.id ?? "", generationJob: job, requestId: o.requestId ?? "" });
    const j = created!;
    if (!o.watch) {
      if (o.json) printJson(GenerationJob.toJSON(j));
      else process.stdout.write(`created ${j.name} (${stateText(j.state)}): ${j.targetCount} examples from ${j.teacher?.model ?? "?"}\nfollow it with: lathe synth watch ${lastId(j.name)}\n`);
      return;
    }
    if (!o.json) process.stdout.write(`created ${j.name}\n`);
    await watchJob(client, j.name, o.json);
  } finally {
    client.close();
  }
}

/** Every review item of a job, in the order they were sampled; only those in `state` when given. */
async function listItems(client: SynthGenServiceClient, job: string, state: ItemState = ItemState.STATE_UNSPECIFIED): Promise<ReviewItem[]> {
  const all: ReviewItem[] = [];
  let pageToken = "";
  do {
    const page = await call(client, "listReviewItems", { parent: job, pageSize: 1000, pageToken, state });
    all.push(...page.reviewItems);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

/** The text of an item's first message of `role` (the last one for the assistant). */
function turnText(item: ReviewItem, role: "user" | "assistant"): string {
  const turns = (item.example?.messages ?? []).filter((m) => chatRoles.name(m.role) === role);
  return (role === "user" ? turns[0] : turns.at(-1))?.content ?? "";
}

type ReviewFlags = ConnectionOptions & { list?: boolean; approveAll?: boolean; reject?: string[]; note?: string; width: number };

/**
 * `lathe synth review JOB`: with `--reject`, `--approve-all` or `--list`, decides or lists without
 * a terminal (rejections first, so `--reject A B --approve-all` approves every other pending
 * item); with none of them, the interactive review of the pending items.
 */
async function review(arg: string, o: ReviewFlags): Promise<void> {
  const job = generationJobName(arg);
  if (o.note !== undefined && o.reject === undefined) throw new Error("--note is the reason for --reject: give --reject ID… too");
  const interactive = !o.list && !o.approveAll && o.reject === undefined;
  if (interactive) {
    if (o.json) throw new Error("--json is for --list, --approve-all and --reject; the interactive review prints for a person");
    if (!process.stdin.isTTY || !process.stdout.isTTY)
      throw new Error(`lathe synth review ${arg} reads keys from a terminal, and this is not one; without one, list the items with --list, then decide with --approve-all, or --reject ID… --note TEXT`);
  }
  const client = connect(SynthGenServiceClient, o);
  try {
    const { generationJob: j } = await call(client, "getGenerationJob", { name: job });
    if (interactive) return await reviewOnTerminal(client, j!);
    const rejected: string[] = [];
    for (const id of o.reject ?? []) {
      const { reviewItem } = await call(client, "rejectReviewItem", { name: reviewItemName(job, id), reason: o.note ?? "" });
      rejected.push(reviewItem!.name);
      if (!o.json) process.stdout.write(`rejected ${reviewItem!.name}\n`);
    }
    const approved: string[] = [];
    if (o.approveAll) {
      for (const item of await listItems(client, job, ItemState.STATE_PENDING)) {
        const { reviewItem } = await call(client, "approveReviewItem", { name: item.name, correctedExample: undefined, note: "" });
        approved.push(reviewItem!.name);
      }
      if (!o.json) process.stdout.write(`approved ${approved.length} pending item${approved.length === 1 ? "" : "s"}\n`);
    }
    if (o.list) {
      const items = await listItems(client, job);
      if (o.json) printJson({ reviewItems: items.map((i) => ReviewItem.toJSON(i)) });
      else if (items.length === 0) process.stdout.write(`${job} has no review items\n`);
      else
        printTable(
          items.map((i) => ({
            id: lastId(i.name),
            state: itemStateText(i.state),
            similarity: i.maxSeedSimilarity.toFixed(2),
            prompt: shortLine(turnText(i, "user"), o.width),
            answer: shortLine(turnText(i, "assistant"), o.width),
            note: shortLine(i.note, o.width),
          })),
          ["id", "state", "similarity", "prompt", "answer", "note"],
        );
    } else if (o.json) printJson({ rejected, approved });
  } finally {
    client.close();
  }
}

/** The interactive review of a job's pending items; prints what was decided and what is left. */
async function reviewOnTerminal(client: SynthGenServiceClient, j: GenerationJob): Promise<void> {
  const id = lastId(j.name);
  const items = await listItems(client, j.name, ItemState.STATE_PENDING);
  if (items.length === 0) {
    process.stdout.write(`${j.name} has no review items pending\n`);
    return;
  }
  const tally = await reviewInteractively(
    j,
    items,
    {
      approve: async (item) => void (await call(client, "approveReviewItem", { name: item.name, correctedExample: undefined, note: "" })),
      reject: async (item, reason) => void (await call(client, "rejectReviewItem", { name: item.name, reason })),
    },
    process.stdin as ReadStream,
    process.stdout as WriteStream,
  );
  process.stdout.write(`${j.name}: ${tally.approved} approved, ${tally.rejected} rejected, ${tally.skipped} skipped; ${tally.pending} of ${items.length} still pending\n`);
  if (tally.pending > 0) process.stdout.write(`go on later with: lathe synth review ${id}  (or publish without them: lathe synth publish ${id} --dataset NAME --skip-pending)\n`);
  else if (!terminal(j.state)) process.stdout.write(`the job is still ${stateText(j.state)}: it may sample more items to review\n`);
  else process.stdout.write(`publish: lathe synth publish ${id} --dataset NAME\n`);
}

type PublishFlags = ConnectionOptions & { dataset: string; versionId?: string; skipPending?: boolean; includeSeed?: boolean; requestId?: string };

/** `lathe synth publish`: the accepted examples as a new version of the dataset (made when missing). */
async function publish(arg: string, o: PublishFlags): Promise<void> {
  const client = connect(SynthGenServiceClient, o);
  const datasets = connect(DatasetServiceClient, o);
  try {
    const dataset = datasetName(o.dataset);
    const made = await call(datasets, "createDataset", { datasetId: dataset.slice("datasets/".length), dataset: Dataset.fromPartial({}), requestId: "" }).then(
      () => true,
      (err: unknown) => {
        if (!(err instanceof AppError && err.code === "ALREADY_EXISTS")) throw err;
        return false;
      },
    );
    const res = await call(client, "publishGenerationJob", {
      name: generationJobName(arg),
      dataset,
      versionId: o.versionId ?? "",
      skipPendingReview: o.skipPending === true,
      includeSeedRows: o.includeSeed === true,
      requestId: o.requestId ?? "",
    }).catch(async (err: unknown) => {
      // A dataset made for a publish that failed is removed again: a failed publish leaves nothing behind.
      if (made) await call(datasets, "deleteDataset", { name: dataset, force: false }).catch(() => undefined);
      throw err;
    });
    if (o.json) printJson({ datasetVersion: res.datasetVersion, exampleCount: res.exampleCount, generationJob: GenerationJob.toJSON(res.generationJob!) });
    else process.stdout.write(`published ${res.exampleCount} examples as ${res.datasetVersion}\nits quality report: lathe datasets report ${versionText(res.datasetVersion)}\n`);
  } finally {
    datasets.close();
    client.close();
  }
}

/** `lathe synth …`: synthetic training data from a teacher model, reviewed and published as a dataset version. */
export function synthCommand(): Command {
  const synth = new Command("synth").description("generate synthetic training examples with a teacher model, review a sample, publish them as a dataset version");

  withConnection(
    synth
      .command("create")
      .description("ask a teacher model (any OpenAI-compatible endpoint) for --count new examples of a task; each is checked like a dataset row, duplicates are dropped, and a sample is held for review")
      .option("--task <text>", "what the examples should do, in plain words, for the teacher (at most 20,000 characters)")
      .option("--task-file <file>", "the task description from a file, instead of --task")
      .option(
        "--examples <FILE.jsonl|D@V>",
        "examples of good data: a JSONL file of chat rows ({\"messages\": […]}, at most 20) shown to the teacher, and/or a dataset version of real examples whose duplicates are dropped (shown 3 at a time when no file is given)",
        (v: string, prev: string[]) => [...prev, v],
        [] as string[],
      )
      .requiredOption("--count <n>", "how many accepted examples to generate (1 to 100,000)", positiveInt("count"))
      .requiredOption("--teacher-url <url>", "the teacher's OpenAI-compatible base URL, up to the version path, e.g. http://127.0.0.1:8081/v1 for the gateway of lathe up")
      .requiredOption("--teacher-model <model>", "the model id the teacher's endpoint knows")
      .option("--teacher-key-env <VAR>", "the environment variable of the synthgen service (of lathe up, locally) that holds the teacher's API key; the key itself never passes through the CLI or is stored")
      .option("--concurrency <n>", "most teacher requests in flight at once, 1 to 64 (default 4)", positiveInt("concurrency"))
      .option("--rpm <n>", "most teacher requests per minute (default: no limit)", positiveInt("rpm"))
      .addOption(new Option("--temperature <t>", "the teacher's sampling temperature, 0 to 2 (default 0.9, for diversity)").argParser(number("temperature", (n) => n >= 0 && n <= 2, "a number from 0 to 2")))
      .option("--max-tokens <n>", "most tokens per teacher answer (default 2048)", positiveInt("max-tokens"))
      .option("--seed <n>", "the teacher's sampling seed, where its endpoint supports one", nonNegativeInt("seed"))
      .addOption(new Option("--review-fraction <f>", "the share of accepted examples held for a person's review, 0 to 1; 0.1 to 0.2 is recommended (default 0.1)").argParser(number("review-fraction", (n) => n >= 0 && n <= 1, "a number from 0 to 1")))
      .option("--max-requests <n>", "most requests to the teacher before giving up on --count (default: three times --count)", positiveInt("max-requests"))
      .option("--max-tokens-budget <n>", "stop once this many tokens (prompt and completion) are spent (default: no limit)", positiveInt("max-tokens-budget"))
      .addOption(new Option("--max-cost <usd>", "stop once this much is spent, at the service's prices for the teacher model (LATHE_SYNTHGEN_PRICES)").argParser(number("max-cost", (n) => n > 0, "a positive number of USD")))
      .option("--display-name <text>", "a human-readable name of the job")
      .option("--id <id>", "the job's id: lowercase letters, digits and - (default: one the server makes)")
      .addOption(new Option("--label <key=value>", "a label of the job (repeatable)").argParser(parseLabel))
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the job the first call created")
      .option("--watch", "then follow the job until it ends: a progress line per change, then its summary (exit 1 when it fails or is cancelled)"),
  ).action(createJob);

  withConnection(synth.command("get <job>").description("show a generation job and its progress: JOB is ID or generationJobs/ID")).action(async (arg: string, o: ConnectionOptions) => {
    const client = connect(SynthGenServiceClient, o);
    try {
      const { generationJob } = await call(client, "getGenerationJob", { name: generationJobName(arg) });
      if (o.json) printJson(GenerationJob.toJSON(generationJob!));
      else printJob(generationJob!);
    } finally {
      client.close();
    }
  });

  withConnection(
    synth
      .command("list")
      .description("list your generation jobs, newest first")
      .option("--filter <filter>", 'e.g. state = STATE_SUCCEEDED AND labels.team = "support"; fields: state, seed_dataset_version, labels.<key>', ""),
  ).action(async (o: ConnectionOptions & { filter: string }) => {
    const client = connect(SynthGenServiceClient, o);
    try {
      const all: GenerationJob[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listGenerationJobs", { pageSize: 1000, pageToken, filter: o.filter });
        all.push(...page.generationJobs);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ generationJobs: all.map((j) => GenerationJob.toJSON(j)) });
      else if (all.length === 0) process.stdout.write("no generation jobs\n");
      else
        printTable(
          all.map((j) => {
            const p = progressOf(j);
            return {
              name: j.name,
              state: stateText(j.state),
              teacher: j.teacher?.model ?? "",
              accepted: `${p.acceptedCount}/${j.targetCount}`,
              "review pending": String(p.reviewPendingCount),
              published: j.publishedDatasetVersion ? versionText(j.publishedDatasetVersion) : "",
              created: j.createTime?.toISOString() ?? "",
            };
          }),
          ["name", "state", "teacher", "accepted", "review pending", "published", "created"],
        );
    } finally {
      client.close();
    }
  });

  withConnection(synth.command("watch <job>").description("follow a job until it ends: a line per change of its progress (a JSON line per snapshot with --json), then its summary; exit 1 when it failed or was cancelled")).action(
    async (arg: string, o: ConnectionOptions) => {
      const client = connect(SynthGenServiceClient, o);
      try {
        await watchJob(client, generationJobName(arg), o.json);
      } finally {
        client.close();
      }
    },
  );

  withConnection(synth.command("cancel <job>").description("stop a queued or running job; what it generated so far can still be reviewed and published").option("--reason <text>", "why, kept with the job")).action(
    async (arg: string, o: ConnectionOptions & { reason?: string }) => {
      const client = connect(SynthGenServiceClient, o);
      try {
        const { generationJob: j } = await call(client, "cancelGenerationJob", { name: generationJobName(arg), reason: o.reason ?? "" });
        if (o.json) printJson(GenerationJob.toJSON(j!));
        else process.stdout.write(`cancelled ${j!.name} after ${progressOf(j!).acceptedCount}/${j!.targetCount} accepted examples\n`);
      } finally {
        client.close();
      }
    },
  );

  withConnection(
    synth
      .command("review <job>")
      .description("decide on the examples a job held for review: on a terminal, one pending item at a time (a approve, r reject with a reason, s skip, q quit); without one, with --list, --approve-all and --reject")
      .option("--list", "print the job's review items with their state (every item with --json)")
      .option("--approve-all", "approve every pending item (after any --reject)")
      .option("--reject <ids...>", "reject these items: their ids, as --list prints them")
      .option("--note <text>", "with --reject: the reason, kept with each item")
      .option("--width <chars>", "with --list: longest text shown in a cell", positiveInt("width"), 40),
  ).action(review);

  withConnection(
    synth
      .command("publish <job>")
      .description("publish a succeeded or cancelled job's accepted examples (those not held for review, and the approved ones) as a new dataset version")
      .requiredOption("--dataset <name>", "the dataset to add the version to: ID or datasets/ID (created when missing)")
      .option("--version-id <id>", "the new version's id (default: the next number)")
      .option("--skip-pending", "leave out the items still pending review (without it, pending items refuse the publish)")
      .option("--include-seed", "put the rows of the job's seed dataset version first in the new version")
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the first publish, never a second version"),
  ).action(publish);

  return synth;
}
