import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
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

        // A model folder to register. The tiny-model generator arrives with the training engine
        // (issue #3); until then the folder holds the config of a tiny Llama.
        const modelDir = join(dataDir, "models", "tiny-llama");
        mkdirSync(modelDir, { recursive: true });
        writeFileSync(
          join(modelDir, "config.json"),
          JSON.stringify({ architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 128, vocab_size: 512, max_position_embeddings: 256, rms_norm_eps: 1e-6, tie_word_embeddings: true }, null, 2),
        );
        const conn = ["--server", platform.address, "--api-key", apiKey];
        const { buildProgram } = await import("../program.js");
        step(`lathe models create tiny-llama --path ${modelDir}`);
        await buildProgram().parseAsync(["models", "create", "tiny-llama", "--path", modelDir, "--display-name", "Tiny Llama", "--request-id", "quickstart-tiny-llama", ...conn], { from: "user" });
        step("lathe models list");
        await buildProgram().parseAsync(["models", "list", ...conn], { from: "user" });
      } finally {
        step("shutting down");
        await platform.stop();
        if (!o.dataDir) rmSync(dataDir, { recursive: true, force: true });
      }
      process.stdout.write("quickstart finished\n");
    });
}
