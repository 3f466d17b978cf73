import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { call } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { EvaluatorServiceClient, type EvaluationRun } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { Deployment_State, GatewayServiceClient } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { RegistryServiceClient, type Alias } from "@lathe/proto/lathe/registry/v1/registry_service";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import { connect, resolveConnection, type ConnectionOptions } from "../connection.js";
import { startLathe } from "../platform.js";
import { buildProgram } from "../program.js";

/** The example data shipped with Lathe (examples/support-tickets, made by its make.mjs). */
const EXAMPLES = resolve(dirname(fileURLToPath(import.meta.url)), "../../../examples/support-tickets");
/** Prices per million tokens the quickstart's evaluator charges the tiny model, so cost per 1,000 answers has numbers: a demo's, not a quote. */
const DEMO_PRICES = { "tiny-llama": { input: 0.1, output: 0.4 } };
const JOB = "support-1";

interface QuickstartOptions {
  dataDir?: string;
  server?: string;
  apiKey?: string;
  http?: string;
}

/**
 * `lathe quickstart`: the whole story once, as the commands a person would type, on the embedded
 * default (or `--server`, a running platform): a tiny base model; the example support-ticket set
 * and its report; a clean split; the seed's first question (does a 3-shot prompt already reach
 * the bar?); a deployment; a fine-tuning job that asks for registration, evaluation, promotion and
 * deployment, and gets them with no one calling the next step; the comparison of the fine-tuned
 * adapter with the 3-shot prompt (quality with intervals, cost, latency, and the verdict); the
 * promotion decision; an answer from the served adapter over the OpenAI-compatible API; the
 * pipeline's trace.
 */
export function quickstartCommand(): Command {
  return new Command("quickstart")
    .description("run the whole pipeline on a tiny model: dataset report, 3-shot baseline, fine-tuning job with evaluation, promotion and deployment, comparison, an answer from the served adapter, the trace")
    .option("--data-dir <dir>", "keep the embedded platform's state here (default: a temporary folder, removed after)")
    .option("--server <host:port>", "run against a running platform instead of starting the embedded one")
    .option("--api-key <key>", "with --server: the API key (default: LATHE_API_KEY)")
    .option("--http <url>", "with --server: the gateway's HTTP base URL (default: http://HOST:PORT+1)")
    .action(async (o: QuickstartOptions) => {
      const embedded = o.server === undefined;
      const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), "lathe-quickstart-"));
      const step = (s: string) => process.stdout.write(`\n== ${s}\n`);
      let conn: { server: string; apiKey: string };
      let httpUrl: string;
      let stop = async () => {};
      if (embedded) {
        step(`lathe up --data-dir ${dataDir}   (the embedded platform: PGlite, an in-process bus, every service in one process)`);
        const started = await startLathe({ dataDir, host: "127.0.0.1", port: 0, logLevel: "warn", env: { ...process.env, LATHE_EVALUATOR_PRICES: JSON.stringify(DEMO_PRICES) } });
        conn = { server: started.platform.address, apiKey: started.apiKey };
        httpUrl = started.httpUrl;
        stop = () => started.platform.stop();
        process.stdout.write(`lathe is up: gRPC ${conn.server}, OpenAI-compatible HTTP ${httpUrl}\n`);
      } else {
        const c = resolveConnection({ server: o.server, apiKey: o.apiKey });
        if (!c.apiKey) throw new Error("--server needs an API key: --api-key or LATHE_API_KEY");
        conn = { server: c.server, apiKey: c.apiKey };
        const [host, port] = [c.server.slice(0, c.server.lastIndexOf(":")), Number(c.server.slice(c.server.lastIndexOf(":") + 1))];
        httpUrl = (o.http ?? `http://${host}:${port + 1}`).replace(/\/+$/, "");
      }
      const flags = ["--server", conn.server, "--api-key", conn.apiKey];
      const co: ConnectionOptions = { server: conn.server, apiKey: conn.apiKey };
      /** Runs one `lathe …` command as a person would type it, printing it first. */
      const lathe = async (args: string[], shown = args.map(shellWord).join(" ")) => {
        step(`lathe ${shown}`);
        // `lathe health` asks no key (the gRPC health check is open).
        await buildProgram().parseAsync(["node", "lathe", ...args, ...(args[0] === "health" ? flags.slice(0, 2) : flags)]);
      };
      try {
        await lathe(["health"]);

        // A base model: a tiny Llama in Hugging Face layout (config, safetensors, a byte-level
        // BPE tokenizer with a ChatML template), made from a seed. A real one is a folder too.
        const modelDir = join(dataDir, "models", "tiny-llama");
        await writeTinyModel(modelDir, { seed: 1 });
        await lathe(["models", "create", "tiny-llama", "--path", modelDir, "--display-name", "Tiny Llama", "--request-id", "quickstart-tiny-llama"]);

        // The example set: 400 support tickets to triage into JSON, with what real exports carry.
        const tickets = join(EXAMPLES, "tickets.jsonl");
        const schema = join(EXAMPLES, "schema.json");
        await lathe(["datasets", "create", "support", tickets, "--tokenizer-model", "models/tiny-llama", "--max-seq-length", "512", "--version-id", "v1"]);
        await lathe(["datasets", "derive", "support@v1", "--drop-failing", "--version-id", "clean"]);
        await lathe(["datasets", "derive", "support@clean", "--split", "0.06", "--seed", "7", "--version-id", "s"]);

        // The seed's first rule: fine-tuning loses when a 3-shot prompt already reaches the bar.
        await lathe(["evals", "baseline", "--model", "tiny-llama", "--train", "support@s-train", "--eval", "support@s-eval", "--shots", "3", "--threshold", "rouge_l=0.6", "--metrics", "rouge,format,mean_token_accuracy", "--json-schema", schema, "--max-tokens", "32", "--temperature", "0", "--id", "three-shot"]);

        // Where the promoted adapter will be served: a deployment of the base model.
        await lathe(["deployments", "create", "tiny-llama", "--id", "support", "--served-name", "support", "--wait"]);

        // The job: LoRA on every projection and the head (the tiny model's head is random and
        // frozen), and what happens after it succeeds, which no one has to call.
        const recipe = ["--epochs", "5", "--batch-size", "4", "--lr", "1e-2", "--warmup-ratio", "0", "--lora-r", "16", "--lora-alpha", "32", "--target-modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head", "--max-seq-length", "512", "--seed", "7"];
        const job = ["--model", "tiny-llama", "--train", "support@s-train", "--eval", "support@s-eval", ...recipe];
        await lathe(["jobs", "estimate", ...job]);
        await lathe([
          "jobs", "create", "--id", JOB, ...job,
          "--register", "tiny-llama/support", "--label", "intended-use=support-ticket triage",
          "--evaluate", "--eval-metrics", "rouge,format,mean_token_accuracy", "--eval-json-schema", schema, "--eval-max-tokens", "32",
          "--promote", "prod", "--promote-if", "mean_token_accuracy=0.05,ci", "--deploy", "support", "--watch",
                ]);

        // The registry registers the version, the evaluator compares it with its baseline, the
        // registry decides the promotion: wait for that decision.
        process.stdout.write("\nwaiting for the pipeline: registration → evaluation → promotion decision …\n");
        const alias = await decision(co, "models/tiny-llama/adapters/support/aliases/prod");
        await lathe(["adapters", "alias-get", "tiny-llama/support", "prod"]);

        // The fine-tuned adapter against the 3-shot prompt, on the same examples.
        const run = await followUpRun(co, `fineTuningJobs/${JOB}`);
        await lathe(["evals", "compare", run.name, "three-shot"]);
        await verdict(co, run.name, "evaluationRuns/three-shot");

        if (alias.decisions.at(-1)?.promoted) {
          await waitServed(co, "deployments/support");
          await lathe(["deployments", "get", "support"]);
          const body = { model: "support:support", messages: [{ role: "user", content: "Hello, my printer keeps restarting since this morning. Can you help?" }], temperature: 0, max_tokens: 32 };
          step("an answer from the promoted adapter through the OpenAI-compatible API");
          process.stdout.write(`curl ${httpUrl}/v1/chat/completions -H "Authorization: Bearer $LATHE_API_KEY" -H "Content-Type: application/json" -d '${JSON.stringify(body)}'\n`);
          const res = await fetch(`${httpUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${conn.apiKey}` }, body: JSON.stringify(body) });
          const answer = (await res.json()) as { choices?: { message: { content: string } }[]; error?: { message: string } };
          if (!res.ok) throw new Error(`the gateway answered ${res.status}: ${answer.error?.message ?? ""}`);
          process.stdout.write(`${answer.choices![0]!.message.content}\n`);
        } else {
          process.stdout.write("\nthe alias did not move, so the deployment does not serve the adapter: see the decision above\n");
        }

        if (embedded) await lathe(["trace", JOB, "--data-dir", dataDir], `trace ${JOB}`);
        else await lathe(["trace", JOB]).catch((err: Error) => process.stdout.write(`${err.message}\n`));
      } finally {
        if (embedded) {
          step("shutting down");
          await stop();
          if (!o.dataDir) rmSync(dataDir, { recursive: true, force: true });
        }
      }
      process.stdout.write("quickstart finished\n");
    });
}

/** An argument as a shell would need it typed: quoted when it holds spaces or quotes; a path under the working folder made relative. */
function shellWord(arg: string): string {
  const cwd = `${process.cwd()}/`;
  const a = arg.startsWith(cwd) ? arg.slice(cwd.length) : arg;
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`;
}

/** Polls until an alias has a promotion decision (the evaluation of the job's version ended), at most 5 minutes. */
async function decision(co: ConnectionOptions, name: string): Promise<Alias> {
  const registry = connect(RegistryServiceClient, co);
  const evaluator = connect(EvaluatorServiceClient, co);
  try {
    for (let i = 0; i < 3000; i++) {
      const a = await call(registry, "getAlias", { name }).then((r) => r.alias, () => undefined);
      if (a && a.decisions.length > 0) return a;
      // A failed evaluation decides nothing: say so instead of waiting.
      const runs = (await call(evaluator, "listEvaluationRuns", { pageSize: 10, pageToken: "", filter: `fine_tuning_job = "fineTuningJobs/${JOB}"` })).evaluationRuns;
      const failed = runs.find((r) => r.error !== undefined);
      if (failed) throw new Error(`the job's evaluation ${failed.name} failed: ${failed.error!.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    registry.close();
    evaluator.close();
  }
  throw new Error(`no promotion decision on ${name} within 5 minutes`);
}

/** The evaluation run the job's follow-up made. */
async function followUpRun(co: ConnectionOptions, job: string): Promise<EvaluationRun> {
  const evaluator = connect(EvaluatorServiceClient, co);
  try {
    const [run] = (await call(evaluator, "listEvaluationRuns", { pageSize: 1, pageToken: "", filter: `fine_tuning_job = "${job}"` })).evaluationRuns;
    if (!run) throw new Error(`${job} has no evaluation run`);
    return run;
  } finally {
    evaluator.close();
  }
}

/** The seed's question answered: is the fine-tuned adapter better than the 3-shot prompt on each metric, and at what cost? */
async function verdict(co: ConnectionOptions, tuned: string, fewShot: string): Promise<void> {
  const evaluator = connect(EvaluatorServiceClient, co);
  try {
    const { differences } = await call(evaluator, "compareEvaluationRuns", { candidateRun: tuned, baselineRun: fewShot, metrics: [], bootstrapSamples: 0, confidenceLevel: 0, seed: 42 });
    const [a, b] = await Promise.all([tuned, fewShot].map(async (name) => (await call(evaluator, "getEvaluationRun", { name })).evaluationRun!));
    const names: Partial<Record<Metric, string>> = { [Metric.METRIC_ROUGE_L]: "ROUGE-L", [Metric.METRIC_FORMAT_COMPLIANCE]: "format compliance", [Metric.METRIC_MEAN_TOKEN_ACCURACY]: "mean token accuracy", [Metric.METRIC_EXACT_MATCH]: "exact match", [Metric.METRIC_BERTSCORE]: "BERTScore" };
    const name = (m: Metric) => names[m] ?? `metric ${m}`;
    const fact = (d: (typeof differences)[number]) => `${name(d.metric)} ${d.candidateValue.toFixed(3)} against ${d.baselineValue.toFixed(3)} (${d.meanDifference >= 0 ? "+" : ""}${d.meanDifference.toFixed(3)}, 95% CI [${d.confidenceInterval!.lower.toFixed(3)}, ${d.confidenceInterval!.upper.toFixed(3)}])`;
    const better = differences.filter((d) => d.confidenceInterval!.lower > 0);
    const notBetter = differences.filter((d) => !(d.confidenceInterval!.lower > 0));
    const ca = a!.candidateServing?.costPer1000Answers;
    const cb = b!.candidateServing?.costPer1000Answers;
    const cost = ca !== undefined && cb !== undefined && ca > 0 ? `cost per 1,000 answers ${ca.toFixed(4)} against ${cb.toFixed(4)} USD (${(cb / ca).toFixed(1)}× less: a short prompt instead of three solved examples)` : "";
    process.stdout.write(
      `\nverdict: ${better.length > 0 ? "fine-tuning was worth it" : "fine-tuning did not clearly beat the 3-shot prompt"}` +
        `${better.length > 0 ? `: better on ${better.map(fact).join("; ")}` : ""}` +
        `${notBetter.length > 0 ? `${better.length > 0 ? "; not clearly better on " : ": "}${notBetter.map(fact).join("; ")}` : ""}` +
        `${cost ? `; ${cost}` : ""}\n`,
    );
  } finally {
    evaluator.close();
  }
}

/** Waits until a deployment is ready and serves an adapter version (the promoted alias's). */
async function waitServed(co: ConnectionOptions, name: string): Promise<void> {
  const gateway = connect(GatewayServiceClient, co);
  try {
    for (let i = 0; i < 1200; i++) {
      const d = (await call(gateway, "getDeployment", { name })).deployment!;
      if (d.state === Deployment_State.STATE_FAILED) throw new Error(`${name} failed: ${d.error?.message ?? ""}`);
      if (d.state === Deployment_State.STATE_READY && d.adapters.some((a) => a.adapterVersion !== "")) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    gateway.close();
  }
  throw new Error(`${name} did not serve the promoted adapter within 2 minutes`);
}
