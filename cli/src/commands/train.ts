import { Command, Option } from "commander";
import { evalLoss, recipeFromAdapter, sequencesFromFile, train, type TrainProgress } from "@lathe/engine";
import { RECIPE_KEYS, RecipeError, resolveRecipe, RECIPE, type RecipeKey } from "@lathe/models";
import { nonNegativeInt, positiveInt } from "../flags.js";
import { formatDuration, printJson } from "../output.js";
import { addRecipeFlags, recipeFlags } from "../recipe-flags.js";

/** The recipe's settings `lathe train` takes: all but logging_steps (it prints every step). */
const TRAIN_SETTINGS: readonly RecipeKey[] = RECIPE_KEYS.filter((k) => k !== "loggingSteps");

interface TrainFlags {
  model: string;
  data: string;
  eval?: string;
  out: string;
  threads: number;
  device: string;
  baseDtype: "f32" | "bf16";
  qlora?: boolean;
  resume?: string | true;
  initAdapter?: string;
  loadBestAtEnd?: boolean;
  json?: boolean;
}

/** One status line, redrawn in place on a terminal and printed per step elsewhere. */
function progressLine(p: TrainProgress): string {
  const width = 20;
  const filled = Math.round((p.step / p.totalSteps) * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] step ${p.step}/${p.totalSteps} epoch ${p.epoch} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)} ${Math.round(p.tokensPerSecond)} tok/s ETA ${formatDuration(p.etaSeconds)}`;
}

/** `lathe train`: LoRA fine-tuning of a Hugging Face model folder on JSONL, on this machine. */
export function trainCommand(): Command {
  const cmd = new Command("train")
    .description("fine-tune LoRA adapters on a JSONL file locally and write a PEFT adapter folder; a setting left out takes the recipe's default, the same as a job's")
    .requiredOption("--model <dir>", "the base model (a Hugging Face folder)")
    .requiredOption("--data <file>", "training data: JSONL of chat `messages`, `instruction`/`output` or `prompt`/`completion`")
    .option("--eval <file>", "evaluation data (JSONL), evaluated after each epoch")
    .requiredOption("--out <dir>", "where to write the adapter (adapter_config.json, adapter_model.safetensors, training_summary.json)");
  addRecipeFlags(cmd, TRAIN_SETTINGS);
  return cmd
    .option("--threads <n>", "engine threads (0: all)", nonNegativeInt("threads"), 0)
    .option("--device <name>", "the engine device: cpu, cuda, or auto (a GPU where the engine has one, else the CPU)", "auto")
    .addOption(new Option("--base-dtype <dtype>", "the frozen base's compute dtype: bf16 keeps the projections and the LM head in bf16 (half their memory; with --qlora, bf16 tiles)").choices(["f32", "bf16"]).default("f32"))
    .option("--qlora", "QLoRA: keep the base model's layer projections in NF4 (about 0.52 bytes per parameter)")
    .option("--resume [dir]", "continue from a checkpoint folder, or the newest under --out (`latest`, the default)")
    .option("--init-adapter <dir>", "start from an existing PEFT adapter (LoRA settings not given are taken from it)")
    .option("--load-best-at-end", "with --eval, leave the adapter of the lowest eval loss in --out instead of the last")
    .option("--json", "print the final summary as JSON on stdout")
    .action(async (o: TrainFlags & Record<string, unknown>) => {
      const tty = process.stderr.isTTY === true;
      const given = recipeFlags(o, TRAIN_SETTINGS);
      // With --init-adapter, LoRA settings not given are the adapter's.
      const asked = o.initAdapter === undefined ? given : await recipeFromAdapter(o.initAdapter, given);
      let recipe;
      try {
        recipe = resolveRecipe(asked, (k) => `--${RECIPE[k].flag}`);
      } catch (err) {
        if (err instanceof RecipeError) throw new Error(err.message);
        throw err;
      }
      const summary = await train(
        {
          modelDir: o.model,
          train: await sequencesFromFile(o.model, o.data, recipe),
          eval: o.eval === undefined ? undefined : await sequencesFromFile(o.model, o.eval, recipe),
          outDir: o.out,
          recipe,
          numThreads: o.threads,
          device: o.device,
          baseDtype: o.baseDtype,
          qlora: o.qlora ?? false,
          resumeFrom: o.resume === undefined ? undefined : o.resume === true ? "latest" : o.resume,
          initAdapter: o.initAdapter,
          loadBestAtEnd: o.loadBestAtEnd ?? false,
        },
        (p) => process.stderr.write(tty ? `\r\x1b[2K${progressLine(p)}` : `${progressLine(p)}\n`),
      );
      if (tty) process.stderr.write("\n");
      if (o.json) printJson(summary);
      else {
        const evalText = summary.evalLossPerEpoch.length > 0 ? `, eval loss ${summary.evalLossPerEpoch.at(-1)!.toFixed(4)}` : "";
        const resumedText = summary.resumedFromStep === null ? "" : ` (resumed from step ${summary.resumedFromStep})`;
        const bestText = summary.bestEvalLoss === null ? "" : `, best eval loss ${summary.bestEvalLoss.toFixed(4)} at step ${summary.bestStep}`;
        process.stdout.write(`wrote ${o.out}: ${summary.steps} steps${resumedText}, train loss ${summary.trainLossPerEpoch.at(-1)?.toFixed(4) ?? "?"}${evalText}${bestText}, ${summary.tokens} tokens in ${summary.seconds.toFixed(1)} s, ${summary.checkpointsWritten.length} checkpoints, base ${summary.baseBytesPerParameter.toFixed(2)} bytes/parameter, peak memory ${(summary.peakMemoryBytes / 2 ** 20).toFixed(0)} MiB\n`);
      }
    });
}

/** `lathe eval-loss`: mean loss and perplexity of a model, with or without an adapter, on JSONL. */
export function evalLossCommand(): Command {
  return new Command("eval-loss")
    .description("mean loss and perplexity of a base model (optionally with a PEFT adapter) on a JSONL file, over the answer tokens")
    .requiredOption("--model <dir>", "the base model (a Hugging Face folder)")
    .option("--adapter <dir>", "a PEFT LoRA adapter folder to apply")
    .requiredOption("--data <file>", "JSONL examples")
    .option("--max-seq-length <n>", "longer examples are truncated", positiveInt("max-seq-length"), RECIPE.maxSeqLength.default as number)
    .option("--batch-size <n>", "examples per forward pass", positiveInt("batch-size"), RECIPE.perDeviceTrainBatchSize.default as number)
    .option("--threads <n>", "engine threads (0: all)", nonNegativeInt("threads"), 0)
    .option("--json", "print the result as JSON")
    .action(async (o: { model: string; adapter?: string; data: string; maxSeqLength: number; batchSize: number; threads: number; json?: boolean }) => {
      const r = await evalLoss(o.model, o.data, { adapterDir: o.adapter, maxSeqLength: o.maxSeqLength, batchSize: o.batchSize, numThreads: o.threads });
      if (o.json) printJson(r);
      else process.stdout.write(`loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)} over ${r.tokens} tokens\n`);
    });
}
