import { Command, Option } from "commander";
import { mergeLoraFolder } from "@lathe/engine";
import { inspectModelFolder, writeTinyModel } from "@lathe/models";
import { printJson } from "../output.js";

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} ${v}: expected a positive integer`);
  return n;
};

/** `lathe models init-tiny DIR`: a complete tiny Hugging Face model folder, made from a seed. */
export function initTinyCommand(): Command {
  return new Command("init-tiny")
    .argument("<dir>", "the folder to write")
    .description("write a tiny random Llama/Qwen2 model in Hugging Face layout (config, safetensors, tokenizer, chat template), the same for the same seed")
    .addOption(new Option("--arch <arch>", "architecture").choices(["llama", "qwen2"]).default("llama"))
    .option("--layers <n>", "decoder layers", int("layers"))
    .option("--hidden <n>", "hidden size", int("hidden"))
    .option("--heads <n>", "attention heads", int("heads"))
    .option("--kv-heads <n>", "key/value heads", int("kv-heads"))
    .option("--intermediate <n>", "MLP size", int("intermediate"))
    .option("--vocab <n>", "vocabulary size (at least 259)", int("vocab"))
    .option("--seed <n>", "seed of the weights", (v: string) => Number(v))
    .option("--tied", "tie the LM head to the embeddings")
    .option("--json", "print what was written as JSON")
    .action(async (dir: string, o: { arch: "llama" | "qwen2"; layers?: number; hidden?: number; heads?: number; kvHeads?: number; intermediate?: number; vocab?: number; seed?: number; tied?: boolean; json?: boolean }) => {
      await writeTinyModel(dir, { arch: o.arch, layers: o.layers, hidden: o.hidden, heads: o.heads, kvHeads: o.kvHeads, intermediate: o.intermediate, vocab: o.vocab, seed: o.seed, tied: o.tied });
      const m = await inspectModelFolder(dir);
      if (o.json) printJson({ dir, architecture: m.config.architecture, parameterCount: m.parameterCount, chatTemplateFingerprint: m.chatTemplateFingerprint, files: m.files });
      else process.stdout.write(`wrote ${dir}: ${m.config.architecture}, ${m.parameterCount.toLocaleString("en-US")} parameters\n`);
    });
}

/** `lathe merge`: base + scale·B·A, written as a Hugging Face model folder (the arithmetic on the engine). */
export function mergeCommand(): Command {
  return new Command("merge")
    .description("merge a PEFT LoRA adapter into its base model and write a Hugging Face model folder")
    .requiredOption("--model <dir>", "the base model folder")
    .requiredOption("--adapter <dir>", "the PEFT adapter folder")
    .requiredOption("--out <dir>", "the folder to write")
    .action(async (o: { model: string; adapter: string; out: string }) => {
      await mergeLoraFolder({ baseDir: o.model, adapterDir: o.adapter, outDir: o.out });
      process.stdout.write(`merged ${o.adapter} into ${o.model}: ${o.out}\n`);
    });
}
