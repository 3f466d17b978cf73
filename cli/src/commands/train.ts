import { Command, Option } from "commander";
import { evalLoss, SCHEDULERS, train, type SchedulerName, type TrainProgress } from "@lathe/engine";
import { nonNegativeInt, number, positiveInt } from "../flags.js";
import { formatDuration, printJson } from "../output.js";

interface TrainFlags {
  model: string;
  data: string;
  eval?: string;
  out: string;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string;
  useRslora?: boolean;
  epochs: number;
  batchSize: number;
  gradAccum: number;
  lr: number;
  scheduler: SchedulerName;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  maxSeqLength: number;
  packing?: boolean;
  trainOnInputs?: boolean;
  seed: number;
  threads: number;
  qlora?: boolean;
  gradCheckpointing?: boolean;
  resume?: string | true;
  saveSteps: number;
  saveTotalLimit: number;
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
  return new Command("train")
    .description("fine-tune LoRA adapters on a JSONL file locally and write a PEFT adapter folder")
    .requiredOption("--model <dir>", "the base model (a Hugging Face folder)")
    .requiredOption("--data <file>", "training data: JSONL of chat `messages`, `instruction`/`output` or `prompt`/`completion`")
    .option("--eval <file>", "evaluation data (JSONL), evaluated after each epoch")
    .requiredOption("--out <dir>", "where to write the adapter (adapter_config.json, adapter_model.safetensors, training_summary.json)")
    .option("--lora-r <n>", "LoRA rank", positiveInt("lora-r"), 16)
    .option("--lora-alpha <x>", "lora_alpha", number("lora-alpha", (n) => n > 0, "a positive number"), 32)
    .option("--lora-dropout <p>", "lora_dropout", number("lora-dropout", (n) => n >= 0 && n < 1, "a number in [0, 1)"), 0.05)
    .option("--target-modules <list>", "comma-separated modules to adapt (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head)", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    .option("--use-rslora", "scale by lora_alpha/sqrt(r) (rsLoRA)")
    .option("--epochs <n>", "passes over the data", positiveInt("epochs"), 3)
    .option("--batch-size <n>", "examples per micro-batch (packed rows with --packing)", positiveInt("batch-size"), 4)
    .option("--grad-accum <n>", "micro-batches per optimizer step", positiveInt("grad-accum"), 1)
    .option("--lr <x>", "peak learning rate", number("lr", (n) => n > 0, "a positive number"), 2e-4)
    .addOption(new Option("--scheduler <name>", "learning-rate schedule").choices([...SCHEDULERS]).default("cosine"))
    .option("--warmup-ratio <x>", "share of steps of linear warmup", number("warmup-ratio", (n) => n >= 0 && n <= 1, "a number in [0, 1]"), 0.03)
    .option("--weight-decay <x>", "AdamW weight decay", number("weight-decay", (n) => n >= 0, "a number >= 0"), 0)
    .option("--max-grad-norm <x>", "clip the gradient norm to this (0: off)", number("max-grad-norm", (n) => n >= 0, "a number >= 0"), 1.0)
    .option("--max-seq-length <n>", "longer examples are truncated", positiveInt("max-seq-length"), 2048)
    .option("--packing", "pack examples into rows of --max-seq-length")
    .option("--train-on-inputs", "train on prompt tokens too, not only the answers")
    .option("--seed <n>", "seed of LoRA's initialisation, dropout and data order", nonNegativeInt("seed"), 42)
    .option("--threads <n>", "engine threads (0: all)", nonNegativeInt("threads"), 0)
    .option("--qlora", "QLoRA: keep the base model's layer projections in NF4 (about 0.52 bytes per parameter)")
    .option("--grad-checkpointing", "gradient checkpointing: recompute each layer in backward instead of keeping its activations (same results, less memory)")
    .option("--save-steps <n>", "write <out>/checkpoint-<step>/ every n optimizer steps (0: only at the end of each epoch)", nonNegativeInt("save-steps"), 500)
    .option("--save-total-limit <n>", "keep only the newest n checkpoints (0: all)", nonNegativeInt("save-total-limit"), 2)
    .option("--resume [dir]", "continue from a checkpoint folder, or the newest under --out (`latest`, the default)")
    .option("--init-adapter <dir>", "start from an existing PEFT adapter (LoRA flags not given are taken from it)")
    .option("--load-best-at-end", "with --eval, leave the adapter of the lowest eval loss in --out instead of the last")
    .option("--json", "print the final summary as JSON on stdout")
    .action(async (o: TrainFlags, cmd: Command) => {
      const tty = process.stderr.isTTY === true;
      // With --init-adapter, LoRA flags left at their defaults are taken from the adapter.
      const given = <T>(key: string, value: T): T | undefined =>
        o.initAdapter !== undefined && cmd.getOptionValueSource(key) === "default" ? undefined : value;
      const summary = await train(
        {
          modelDir: o.model,
          dataPath: o.data,
          evalPath: o.eval,
          outDir: o.out,
          loraR: given("loraR", o.loraR),
          loraAlpha: given("loraAlpha", o.loraAlpha),
          loraDropout: given("loraDropout", o.loraDropout),
          targetModules: given("targetModules", o.targetModules.split(",").filter((m) => m.trim() !== "")),
          useRslora: o.initAdapter !== undefined && o.useRslora === undefined ? undefined : (o.useRslora ?? false),
          epochs: o.epochs,
          batchSize: o.batchSize,
          gradAccum: o.gradAccum,
          lr: o.lr,
          scheduler: o.scheduler,
          warmupRatio: o.warmupRatio,
          weightDecay: o.weightDecay,
          maxGradNorm: o.maxGradNorm,
          maxSeqLength: o.maxSeqLength,
          packing: o.packing ?? false,
          trainOnInputs: o.trainOnInputs ?? false,
          seed: o.seed,
          numThreads: o.threads,
          qlora: o.qlora ?? false,
          gradientCheckpointing: o.gradCheckpointing ?? false,
          saveSteps: o.saveSteps,
          saveTotalLimit: o.saveTotalLimit,
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
    .option("--max-seq-length <n>", "longer examples are truncated", positiveInt("max-seq-length"), 2048)
    .option("--batch-size <n>", "examples per forward pass", positiveInt("batch-size"), 4)
    .option("--threads <n>", "engine threads (0: all)", nonNegativeInt("threads"), 0)
    .option("--json", "print the result as JSON")
    .action(async (o: { model: string; adapter?: string; data: string; maxSeqLength: number; batchSize: number; threads: number; json?: boolean }) => {
      const r = await evalLoss(o.model, o.data, { adapterDir: o.adapter, maxSeqLength: o.maxSeqLength, batchSize: o.batchSize, numThreads: o.threads });
      if (o.json) printJson(r);
      else process.stdout.write(`loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)} over ${r.tokens} tokens\n`);
    });
}
