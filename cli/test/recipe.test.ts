import { describe, expect, it } from "vitest";
import { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { RECIPE, RECIPE_KEYS, defaultText, resolveRecipe, type Recipe, type RecipeKey } from "@lathe/models";
import { resolveOptions } from "../../libs/engine/ts/train/config.js";
import { jobRecipe, recipeOf, validateJob } from "../../services/trainer/src/domain/spec.js";
import { Command } from "commander";
import { addRecipeFlags, recipeFlags, recipeFlagsText, recipeFlagValues } from "../src/recipe-flags.js";
import { runCli } from "./cli-process.js";

/** The help text of one option, its lines joined: commander wraps to the terminal's width. */
function optionHelp(help: string, flag: string): string {
  const lines = help.split("\n");
  const at = lines.findIndex((l) => new RegExp(`^\\s+--${flag}( <|\\s)`).test(l));
  if (at < 0) throw new Error(`--${flag} is not in the help`);
  const out = [lines[at]!];
  for (const l of lines.slice(at + 1)) {
    if (/^\s+--/.test(l) || l.trim() === "") break;
    out.push(l);
  }
  // Commander pads each flag to the widest flag of its command: compare the words, not the padding.
  return out.map((l) => l.trim()).join(" ").replace(/\s+/g, " ");
}

describe("one recipe for lathe train, lathe jobs create, the trainer and the engine", () => {
  it("lathe train --help and lathe jobs create --help say the same of every setting, with the recipe's default", async () => {
    const train = await runCli(["train", "--help"]);
    const jobs = await runCli(["jobs", "create", "--help"]);
    expect(train.code).toBe(0);
    expect(jobs.code).toBe(0);
    for (const key of RECIPE_KEYS.filter((k): k is RecipeKey => k !== "loggingSteps")) {
      const s = RECIPE[key];
      const a = optionHelp(train.stdout, s.flag);
      expect(a, s.flag).toBe(optionHelp(jobs.stdout, s.flag));
      expect(a.replace(/\s+/g, ""), s.flag).toContain(`default${defaultText(s)}`.replace(/\s+/g, ""));
      if (s.kind === "bool") expect(optionHelp(train.stdout, `no-${s.flag}`)).toBe(optionHelp(jobs.stdout, `no-${s.flag}`));
    }
    expect(optionHelp(jobs.stdout, "logging-steps")).toContain("(logging_steps, default 10)");
  });

  it("an empty spec resolves to the same settings in the CLI, the trainer and the engine", () => {
    const cli = resolveRecipe(recipeFlags({}));
    const empty = FineTuningJob.fromPartial({ baseModel: "models/m", trainDatasetVersion: "datasets/d/versions/v" });
    expect(jobRecipe(empty)).toEqual(cli);
    expect(recipeOf(validateJob(empty, ["cpu"]))).toEqual(cli);
    const engine = resolveOptions({ modelDir: "m", train: { sequences: [], truncated: 0 }, outDir: "o", recipe: cli });
    expect(engine).toMatchObject({
      loraR: cli.r, loraAlpha: cli.loraAlpha, loraDropout: cli.loraDropout, targetModules: cli.targetModules, useRslora: cli.useRslora,
      epochs: cli.numTrainEpochs, batchSize: cli.perDeviceTrainBatchSize, gradAccum: cli.gradientAccumulationSteps, lr: cli.learningRate,
      scheduler: cli.lrSchedulerType, warmupRatio: cli.warmupRatio, weightDecay: cli.weightDecay, maxGradNorm: cli.maxGradNorm, maxSeqLength: cli.maxSeqLength,
      packing: cli.packing, trainOnInputs: cli.trainOnInputs, seed: cli.seed, gradientCheckpointing: cli.gradientCheckpointing, saveSteps: cli.saveSteps,
      saveTotalLimit: cli.saveTotalLimit,
    });
    // The seed's recipe.
    expect(cli).toMatchObject({ r: 16, loraAlpha: 32, loraDropout: 0.05, useRslora: true, numTrainEpochs: 3, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 4, learningRate: 2e-4, lrSchedulerType: "cosine", warmupRatio: 0.03, packing: true, gradientCheckpointing: true });
  });

  it("settings written as flags parse back to the same settings and values", () => {
    const settings: Partial<Recipe> = { numTrainEpochs: 6, loraAlpha: 8.5, useRslora: false, packing: true, learningRate: 1e-2, targetModules: ["q_proj", "lm_head"], lrSchedulerType: "linear" };
    const text = recipeFlagsText(settings);
    expect(text).toBe("--epochs 6 --lora-alpha 8.5 --no-rslora --packing --lr 0.01 --target-modules q_proj,lm_head --scheduler linear");
    const parsed = addRecipeFlags(new Command().exitOverride()).parse(text.split(" "), { from: "user" }).opts();
    expect(recipeFlags(parsed)).toEqual(settings);
    expect(recipeFlagValues(settings)).toEqual(Object.fromEntries(Object.entries(parsed).filter(([, v]) => v !== undefined)));
  });

  it("a flag out of range is refused by the flag's name in both commands, before anything runs", async () => {
    const train = await runCli(["train", "--model", "m", "--data", "d", "--out", "o", "--lora-dropout", "0.7"]);
    const jobs = await runCli(["jobs", "create", "--model", "m", "--train", "d@v", "--lora-dropout", "0.7"]);
    expect(train.code).toBe(1);
    expect(jobs.code).toBe(1);
    expect(train.stderr).toContain("--lora-dropout 0.7: must be a number from 0 to 0.5, got 0.7");
    expect(jobs.stderr).toContain("--lora-dropout 0.7: must be a number from 0 to 0.5, got 0.7");
  });
});
