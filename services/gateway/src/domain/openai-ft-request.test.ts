import { describe, expect, test } from "vitest";
import type { OpenAiError } from "./errors.js";
import { BASE_LEARNING_RATE, openAiParamOf, parseFineTuningJobCreate, trainingArgumentsOf } from "./openai-ft-request.js";

const refused = (body: unknown): OpenAiError => {
  try {
    parseFineTuningJobCreate(body);
  } catch (e) {
    return e as OpenAiError;
  }
  throw new Error("the request was accepted");
};

describe("OpenAI's fine-tuning job request", () => {
  test("numbers are kept, 'auto' (or absent) is left to the trainer's rule", () => {
    const r = parseFineTuningJobCreate({ model: "tiny", training_file: "file-a", method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2, batch_size: "auto" } } } });
    expect(r.request.hyperparameters).toEqual({ n_epochs: 2, batch_size: "auto", learning_rate_multiplier: "auto" });
    expect(trainingArgumentsOf(r.request.hyperparameters)).toEqual({ numTrainEpochs: 2, perDeviceTrainBatchSize: 0, gradientAccumulationSteps: 0, learningRate: 0, autoHyperparameters: true });
    const fixed = trainingArgumentsOf({ n_epochs: 3, batch_size: 8, learning_rate_multiplier: 0.5 });
    expect(fixed).toEqual({ numTrainEpochs: 3, perDeviceTrainBatchSize: 8, gradientAccumulationSteps: 1, learningRate: 0.5 * BASE_LEARNING_RATE, autoHyperparameters: false });
  });

  test("the deprecated top-level hyperparameters are read, but not together with method's", () => {
    expect(parseFineTuningJobCreate({ model: "tiny", training_file: "file-a", hyperparameters: { n_epochs: 4 } }).request.hyperparameters.n_epochs).toBe(4);
    expect(refused({ model: "tiny", training_file: "file-a", hyperparameters: {}, method: { type: "supervised" } }).param).toBe("hyperparameters");
  });

  test("LoRA settings come from documented metadata keys; an unknown lathe.* key or a bad value names the key", () => {
    const r = parseFineTuningJobCreate({ model: "tiny", training_file: "f", metadata: { "lathe.lora_r": "8", "lathe.lora_alpha": "16", "lathe.lora_dropout": "0", "lathe.target_modules": "q_proj, v_proj", "lathe.method": "qlora", "lathe.max_seq_length": "512", team: "x" } });
    expect(r.lora).toMatchObject({ r: 8, alpha: 16, dropout: 0, targetModules: ["q_proj", "v_proj"], maxSeqLength: 512 });
    expect(refused({ model: "tiny", training_file: "f", metadata: { "lathe.rank": "8" } }).param).toBe("metadata.lathe.rank");
    expect(refused({ model: "tiny", training_file: "f", metadata: { "lathe.lora_r": "8.5" } }).param).toBe("metadata.lathe.lora_r");
    expect(refused({ model: "tiny", training_file: "f", metadata: { "lathe.target_modules": "q_proj,attn" } }).message).toMatch(/'attn'/);
  });

  test("each wrong input is a 400 naming its field", () => {
    const cases: [unknown, string][] = [
      [{ training_file: "f" }, "model"],
      [{ model: "tiny" }, "training_file"],
      [{ model: "tiny", training_file: "f", hyperparameters: { n_epochs: 0 } }, "hyperparameters.n_epochs"],
      [{ model: "tiny", training_file: "f", hyperparameters: { batch_size: 1.5 } }, "hyperparameters.batch_size"],
      [{ model: "tiny", training_file: "f", hyperparameters: { learning_rate_multiplier: 0 } }, "hyperparameters.learning_rate_multiplier"],
      [{ model: "tiny", training_file: "f", hyperparameters: { warmup: 1 } }, "hyperparameters.warmup"],
      [{ model: "tiny", training_file: "f", suffix: "a:b" }, "suffix"],
      [{ model: "tiny", training_file: "f", seed: -1 }, "seed"],
      [{ model: "tiny", training_file: "f", method: { type: "reinforcement" } }, "method.type"],
      [{ model: "tiny", training_file: "f", epochs: 3 }, "epochs"],
      [{ model: "tiny:adapter", training_file: "f" }, "model"],
      [{ model: "ft:tiny:acme::abc", training_file: "f" }, "model"],
    ];
    for (const [body, param] of cases) {
      const e = refused(body);
      expect(e.status).toBe(400);
      expect(e.param).toBe(param);
    }
  });

  test("the trainer's field names become OpenAI's params", () => {
    expect(openAiParamOf("fine_tuning_job.training_arguments.learning_rate", true)).toBe("method.supervised.hyperparameters.learning_rate_multiplier");
    expect(openAiParamOf("fine_tuning_job.training_arguments.num_train_epochs", false)).toBe("hyperparameters.n_epochs");
    expect(openAiParamOf("fine_tuning_job.train_dataset_version", true)).toBe("training_file");
    expect(openAiParamOf(undefined, true)).toBeNull();
  });
});
