import { describe, expect, it } from "vitest";
import { RECIPE, RECIPE_KEYS, RecipeError, checkRecipe, resolveRecipe, settingHelp } from "./recipe.js";

describe("the recipe", () => {
  it("resolves an empty spec to the reference recipe", () => {
    expect(resolveRecipe({})).toEqual({
      r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], useRslora: true,
      numTrainEpochs: 3, maxSteps: 0, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 4, learningRate: 2e-4, lrSchedulerType: "cosine", warmupRatio: 0.03,
      weightDecay: 0, maxGradNorm: 1, maxSeqLength: 2048, packing: true, gradientCheckpointing: true, trainOnInputs: false, seed: 42,
      loggingSteps: 10, evalSteps: 0, saveSteps: 0, saveTotalLimit: 2,
    });
  });

  it("keeps given settings, takes short module names, drops repeats, and lora_alpha may be fractional", () => {
    const r = resolveRecipe({ r: 4, loraAlpha: 8.5, targetModules: ["q", "v_proj", "q_proj", "lm_head"], packing: false, maxGradNorm: 0 });
    expect(r).toMatchObject({ r: 4, loraAlpha: 8.5, targetModules: ["q_proj", "v_proj", "lm_head"], packing: false, maxGradNorm: 0 });
  });

  it.each([
    [{ r: 0 }, "r: must be an integer from 1 to 256, got 0"],
    [{ r: 2.5 }, "r: must be an integer from 1 to 256, got 2.5"],
    [{ loraAlpha: 0 }, "lora_alpha: must be a number greater than 0 and at most 1024, got 0"],
    [{ loraDropout: 0.9 }, "lora_dropout: must be a number from 0 to 0.5, got 0.9"],
    [{ learningRate: Number.NaN }, "learning_rate: must be a number greater than 0 and at most 1, got NaN"],
    [{ lrSchedulerType: "step" }, 'lr_scheduler_type: must be one of cosine, linear, constant, got "step"'],
    [{ targetModules: ["q_proj", "qkv"] }, 'target_modules[1]: "qkv" is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head'],
    [{ targetModules: [] }, "target_modules: must name at least one module"],
    [{ seed: 2 ** 32 }, "seed: must be an integer from 0 to 4294967295, got 4294967296"],
    [{ packing: "yes" }, 'packing: must be true or false, got "yes"'],
  ])("refuses %j, naming the setting", (given, message) => {
    expect(() => resolveRecipe(given)).toThrow(RecipeError);
    expect(() => resolveRecipe(given)).toThrow(message);
  });

  it("names a setting as the caller does", () => {
    const err = (() => {
      try {
        resolveRecipe({ learningRate: 2 }, (k) => `fine_tuning_job.training_arguments.${RECIPE[k].hf}`);
      } catch (e) {
        return e as RecipeError;
      }
      throw new Error("resolved");
    })();
    expect(err).toMatchObject({ setting: "learningRate", field: "fine_tuning_job.training_arguments.learning_rate", reason: "must be a number greater than 0 and at most 1, got 2" });
  });

  it("refuses a key that is no setting, and checkRecipe refuses a partial recipe", () => {
    expect(() => resolveRecipe({ epochs: 3 } as never)).toThrow(/epochs is not a setting/);
    const { seed: _seed, ...partial } = resolveRecipe({});
    expect(() => checkRecipe(partial as never)).toThrow("seed: is not resolved");
  });

  it("has help with range and default for every setting", () => {
    for (const k of RECIPE_KEYS) expect(settingHelp(k)).toMatch(/\(\w+, default .+\)$/);
    expect(settingHelp("learningRate")).toBe("peak learning rate of AdamW; a number greater than 0 and at most 1 (learning_rate, default 0.0002)");
    expect(settingHelp("maxGradNorm")).toBe("clip the global gradient norm to this; a number from 0 to 1000000, 0: no clipping (max_grad_norm, default 1)");
    expect(settingHelp("saveSteps")).toContain("default 0, only at the end of every epoch");
  });
});
