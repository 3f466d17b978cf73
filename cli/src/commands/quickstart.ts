import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { writeTinyModel } from "@lathe/models";
import { startLathe } from "../platform.js";
import { checkHealth } from "./health.js";

/**
 * `lathe quickstart`: the main story on the embedded default, end to end as far as the platform
 * goes today — start everything, check health, register a model, list it, shut down.
 */
export function quickstartCommand(): Command {
  return new Command("quickstart")
    .description("start the embedded platform, register a model, list it, and shut down")
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
        const conn = ["--server", platform.address, "--api-key", apiKey];
        const { buildProgram } = await import("../program.js");
        step(`lathe models create tiny-llama --path ${modelDir}`);
        await buildProgram().parseAsync(["models", "create", "tiny-llama", "--path", modelDir, "--display-name", "Tiny Llama", "--request-id", "quickstart-tiny-llama", ...conn], { from: "user" });
        step("lathe models list");
        await buildProgram().parseAsync(["models", "list", ...conn], { from: "user" });

        const data = join(dataDir, "support.jsonl");
        writeFileSync(data, supportExamples());
        step(`lathe datasets create support ${data} --tokenizer-model models/tiny-llama --max-seq-length 512`);
        await buildProgram().parseAsync(["datasets", "create", "support", data, "--tokenizer-model", "models/tiny-llama", "--max-seq-length", "512", ...conn], { from: "user" });
        step("lathe datasets derive support@v1 --drop-failing");
        await buildProgram().parseAsync(["datasets", "derive", "support@v1", "--drop-failing", "--version-id", "clean", ...conn], { from: "user" });
        step("lathe datasets derive support@clean --split 0.2 --seed 7");
        await buildProgram().parseAsync(["datasets", "derive", "support@clean", "--split", "0.2", "--seed", "7", "--version-id", "s", ...conn], { from: "user" });

        const train = join(dataDir, "train.jsonl");
        const evalFile = join(dataDir, "eval.jsonl");
        step("lathe datasets export support@s-train / support@s-eval");
        await buildProgram().parseAsync(["datasets", "export", "support@s-train", "--out", train, ...conn], { from: "user" });
        await buildProgram().parseAsync(["datasets", "export", "support@s-eval", "--out", evalFile, ...conn], { from: "user" });

        // Fine-tune on the embedded engine (CPU): a few epochs of LoRA on the tiny model. Its head
        // is random and frozen, so the head gets an adapter too, or the loss could barely move.
        const adapterDir = join(dataDir, "adapters", "support-v1");
        step(`lathe train --model ${modelDir} --data train.jsonl --eval eval.jsonl --out ${adapterDir}`);
        await buildProgram().parseAsync(["train", "--model", modelDir, "--data", train, "--eval", evalFile, "--out", adapterDir, "--epochs", "6", "--batch-size", "4", "--lora-r", "8", "--lora-alpha", "16", "--lr", "1e-2", "--target-modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head", "--max-seq-length", "512", "--seed", "7"], { from: "user" });

        step("lathe adapters register tiny-llama/support (from the training run), alias production, card");
        await buildProgram().parseAsync(["adapters", "register", "tiny-llama/support", adapterDir, "--train-dataset", "datasets/support/versions/s-train", "--eval-dataset", "datasets/support/versions/s-eval", "--label", "intended-use=support-desk replies", ...conn], { from: "user" });
        await buildProgram().parseAsync(["adapters", "alias", "tiny-llama/support", "1", "--alias", "production", "--reason", "quickstart", ...conn], { from: "user" });
        await buildProgram().parseAsync(["lineage", "models/tiny-llama/adapters/support/aliases/production", "--up", ...conn], { from: "user" });
        step("lathe adapters download tiny-llama/support@1 --format gguf");
        await buildProgram().parseAsync(["adapters", "download", "tiny-llama/support@1", "--format", "gguf", "--out", join(dataDir, "gguf"), ...conn], { from: "user" });
      } finally {
        step("shutting down");
        await platform.stop();
        if (!o.dataDir) rmSync(dataDir, { recursive: true, force: true });
      }
      process.stdout.write("quickstart finished\n");
    });
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
