import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import type { Recipe } from "@lathe/models";
import { call } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { connect, type ConnectionOptions } from "../connection.js";
import { jobName, lastId } from "../names.js";
import { startLathe } from "../platform.js";
import { recipeFlagsText, recipeFlagValues } from "../recipe-flags.js";
import { downloadAdapterVersion, setAlias, showLineage } from "./adapters.js";
import { createDataset, deriveDatasetVersion } from "./datasets.js";
import { checkHealth } from "./health.js";
import { createJob, getJob } from "./jobs.js";
import { createModel, listModels } from "./models.js";

/**
 * `lathe quickstart`: the main story on the embedded default, end to end as far as the platform
 * goes today — start everything, check health, register a model, upload a dataset and clean and
 * split it, fine-tune it in a job that registers its adapter, alias it, show its lineage,
 * download it as GGUF, shut down.
 */
export function quickstartCommand(): Command {
  return new Command("quickstart")
    .description("start the embedded platform and run the pipeline on a tiny model: dataset, fine-tuning job, registered adapter, alias, lineage, GGUF")
    .option("--data-dir <dir>", "keep the state here (default: a temporary folder, removed after)")
    .action(async (o: { dataDir?: string }) => {
      const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), "lathe-quickstart-"));
      const step = (s: string) => process.stdout.write(`\n== ${s}\n`);
      step(`starting the embedded platform in ${dataDir}`);
      const { platform, apiKey } = await startLathe({ dataDir, host: "127.0.0.1", port: 0, logLevel: "warn" });
      try {
        process.stdout.write(`lathe is up at ${platform.address}\n`);
        step("health");
        const health = await checkHealth(platform.address);
        for (const [service, status] of Object.entries(health)) process.stdout.write(`${service}: ${status}\n`);
        if (Object.values(health).some((s) => s !== "SERVING")) throw new Error("a service is not SERVING");

        // A model to register: a tiny Llama in Hugging Face layout (config, safetensors, a
        // byte-level BPE tokenizer with a ChatML template), made from a seed.
        const modelDir = join(dataDir, "models", "tiny-llama");
        await writeTinyModel(modelDir, { seed: 1 });
        const conn: ConnectionOptions = { server: platform.address, apiKey };
        step(`lathe models create tiny-llama --path ${modelDir}`);
        await createModel("tiny-llama", { ...conn, path: modelDir, displayName: "Tiny Llama", description: "", requestId: "quickstart-tiny-llama" });
        step("lathe models list");
        await listModels(conn);

        const data = join(dataDir, "support.jsonl");
        writeFileSync(data, supportExamples());
        step(`lathe datasets create support ${data} --tokenizer-model models/tiny-llama --max-seq-length 512`);
        await createDataset("support", data, { ...conn, format: "auto", tokenizerModel: "models/tiny-llama", maxSeqLength: "512" });
        step("lathe datasets derive support@v1 --drop-failing");
        await deriveDatasetVersion("support@v1", { ...conn, dropFailing: true, seed: "42", versionId: "clean" });
        step("lathe datasets derive support@clean --split 0.2 --seed 7");
        await deriveDatasetVersion("support@clean", { ...conn, split: "0.2", seed: "7", versionId: "s" });

        // Fine-tune through the trainer: the job pins the dataset versions and the model, the
        // embedded worker trains it on the CPU engine, and the registry registers the adapter when
        // it succeeds. The tiny model's head is random and frozen, so the head gets an adapter too,
        // or the loss could barely move; one row per sequence and small batches give the 19 rows
        // 60 optimizer steps, which take the eval loss from about 6.3 to about 1.2 in seconds.
        const job = "support-1";
        // The step names the command a person would type; createJob takes what its flags parse to.
        const recipe: Partial<Recipe> = {
          numTrainEpochs: 6, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 1, r: 16, loraAlpha: 32, useRslora: false, learningRate: 1e-2,
          targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"], maxSeqLength: 512, packing: false, seed: 7,
        };
        step(
          `lathe jobs create --id ${job} --model tiny-llama --train support@s-train --eval support@s-eval --register tiny-llama/support ` +
            `${recipeFlagsText(recipe)} --label 'intended-use=support-desk replies' --watch`,
        );
        const settings = recipeFlagValues(recipe);
        const flags = { ...settings, model: "tiny-llama", train: "support@s-train", eval: "support@s-eval", register: "tiny-llama/support", label: { "intended-use": "support-desk replies" } };
        await createJob(flags, { ...conn, id: job, watch: true });

        // The registry registers the adapter from the job's success event; the job learns its
        // version from the registry's event right after.
        step(`lathe jobs get ${job} (once the registry registered its adapter)`);
        const version = await registeredVersion(conn, jobName(job));
        await getJob(job, conn);
        const number = lastId(version);

        step(`lathe adapters alias tiny-llama/support ${number} --alias production; lineage`);
        await setAlias("tiny-llama/support", number, { ...conn, alias: "production", reason: "quickstart" });
        await showLineage("models/tiny-llama/adapters/support/aliases/production", { ...conn, up: true, depth: "5" });
        step(`lathe adapters download tiny-llama/support@${number} --format gguf`);
        await downloadAdapterVersion(`tiny-llama/support@${number}`, { ...conn, format: "gguf", ggufType: "f16", out: join(dataDir, "gguf") });
      } finally {
        step("shutting down");
        await platform.stop();
        if (!o.dataDir) rmSync(dataDir, { recursive: true, force: true });
      }
      process.stdout.write("quickstart finished\n");
    });
}

/** Waits (a few seconds at most) until the registry registered the job's adapter; its version's name. */
async function registeredVersion(conn: ConnectionOptions, name: string): Promise<string> {
  const client = connect(TrainerServiceClient, conn);
  try {
    for (let i = 0; i < 100; i++) {
      const { fineTuningJob } = await call(client, "getFineTuningJob", { name });
      if (fineTuningJob!.adapterVersion !== "") return fineTuningJob!.adapterVersion;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    client.close();
  }
  throw new Error(`${name} succeeded but the registry did not register its adapter within 10 s`);
}

/**
 * A small support-desk dataset, made the same way every time, with the problems real data has:
 * a duplicate, a near duplicate, an answer too short, a line that is not JSON, an e-mail address.
 */
function supportExamples(): string {
  const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet"];
  const issues = ["does not turn on", "keeps restarting", "is very slow", "shows an error code", "loses its connection", "makes a strange noise"];
  const lines: string[] = [];
  // 24 rows: every product with every issue once (8 × 6 / 2: i mod 8 and i mod 6 pair up uniquely).
  for (let i = 0; i < 24; i++) {
    const p = products[i % products.length]!;
    const issue = issues[i % issues.length]!;
    lines.push(
      JSON.stringify({
        messages: [
          { role: "system", content: "You are a concise, friendly support agent." },
          { role: "user", content: `My ${p} ${issue} since yesterday (ticket ${1000 + i}). What should I do?` },
          { role: "assistant", content: `Sorry about your ${p}. First unplug it for thirty seconds, then start it again. If it still ${issue}, reset it to factory settings and tell us the result under ticket ${1000 + i}.` },
        ],
      }),
    );
  }
  lines.push(lines[3]!); // an exact duplicate
  lines.push(lines[4]!.replace("thirty seconds", "thirty full seconds")); // a near duplicate
  lines.push(JSON.stringify({ prompt: "My printer jams on every page I print. Any idea why?", completion: "Clean it." })); // too short, and another format
  lines.push("{this line is not JSON");
  lines.push(JSON.stringify({ messages: [{ role: "user", content: "Please write to me at jane.doe@example.com about my broken camera." }, { role: "assistant", content: "Of course. We will e-mail you the repair form for the camera within one business day." }] }));
  return `${lines.join("\n")}\n`;
}
