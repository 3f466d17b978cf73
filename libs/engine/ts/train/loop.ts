/**
 * The LoRA training loop over the engine: JSONL in, PEFT adapter and a JSON summary out.
 *
 * Data: every line of the JSONL file is a TrainingExample, tokenized with the model's tokenizer
 * and chat template (only answers trained unless trainOnInputs). Each epoch shuffles the
 * examples (or, with packing, the packed rows) with a seeded generator; consecutive chunks of
 * batchSize form micro-batches and gradAccum micro-batches form one optimizer step.
 *
 * Gradient accumulation weights micro-batches by their label counts: the engine's loss is the
 * mean over a micro-batch's labels, so micro-batch i runs with gradScale = n_i / N (n_i its
 * labels, N those of the whole optimizer step). The summed gradient is then that of the mean
 * loss over all N labels, i.e. exactly the update one batch of all those examples would give
 * (HF's newer `num_items_in_batch` behaviour, not the older mean of micro-batch means).
 */
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { loadTokenizer, readModelConfig, writePeftAdapter } from "@lathe/models";
import { CheckpointError, EngineError, LossNotFiniteError } from "../errors.js";
import { Model, NF4_MODULES } from "../model.js";
import { lrAt, peakLr, planSteps } from "../schedule.js";
import { checkSequences, epochSeed, labelCount, padTokenId, realTokens, shuffled, stepBatches, trainingUnits } from "./batches.js";
import {
  checkResumable,
  dataFingerprint,
  dropoutRngState,
  listCheckpoints,
  readTrainerState,
  resolveCheckpoint,
  restoreCheckpoint,
  rotateCheckpoints,
  STATE_FORMAT,
  trajectorySettings,
  writeCheckpoint,
  type TrainerState,
} from "./checkpoint.js";
import { resolveOptions, type TrainOptions } from "./config.js";
import { meanLoss } from "./eval-loss.js";
import { checkAdapterSettings, loadAdapterTensors, readInitAdapter } from "./init-adapter.js";

/** Sent after every optimizer step. */
export interface TrainProgress {
  /** 1-based optimizer step just taken. */
  step: number;
  totalSteps: number;
  /** Optimizer steps of a whole epoch (step / stepsPerEpoch is the fractional epoch). */
  stepsPerEpoch: number;
  /** 1-based epoch. */
  epoch: number;
  /** Mean loss over the step's labels. */
  loss: number;
  /** The step's trained labels (0 when none had a label). */
  labels: number;
  /** Of those, how many the model's argmax predicted (before the step's update): labels and correct make the mean token accuracy of any window of steps. */
  correct: number;
  /** Learning rate the step used. */
  lr: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  /** The eval loss computed after this step (each epoch's end, every evalSteps, the last step); null when none was. */
  evalLoss: number | null;
  /** The eval set's mean token accuracy computed with `evalLoss` (the share of its labels the argmax predicted); null when none was. */
  evalMeanTokenAccuracy: number | null;
  /** Tokens (padding excluded) per second since the start. */
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface TrainSummary {
  /** Label-weighted mean training loss of each epoch. */
  trainLossPerEpoch: number[];
  /** Mean eval loss at the end of each epoch where one was computed (every epoch with eval_steps 0); empty without eval data. */
  evalLossPerEpoch: number[];
  /**
   * Every eval loss computed, by optimizer step: each epoch's end (eval_steps 0) or every
   * eval_steps steps, and the last step; with the eval set's mean token accuracy then (absent for
   * evaluations resumed from a checkpoint written before it was kept).
   */
  evalLosses: { step: number; epoch: number; loss: number; meanTokenAccuracy?: number }[];
  /** Label-weighted mean token accuracy of each epoch's training steps (NaN for an epoch partly resumed from a checkpoint that did not keep it). */
  trainMeanTokenAccuracyPerEpoch: number[];
  /** Tokens processed (padding excluded), all epochs. */
  tokens: number;
  seconds: number;
  /** Examples longer than maxSeqLength, cut (train and eval). */
  truncatedExamples: number;
  steps: number;
  adapterDir: string;
  /** Checkpoint folders written by this call (rotation may have removed older ones since). */
  checkpointsWritten: string[];
  /** Checkpoint folders present at the end (the newest saveTotalLimit). */
  checkpoints: string[];
  /** Lowest eval loss seen (its adapter is in `<outDir>/best/`); null without eval data. */
  bestEvalLoss: number | null;
  /** Optimizer step of the best eval loss; null without eval data. */
  bestStep: number | null;
  /** The step this call resumed from; null for a fresh run. */
  resumedFromStep: number | null;
  /** Frozen base weights as stored (all of them; the embeddings stay f32, a tied head's bf16 copy counts): bytes / parameters. */
  baseBytesPerParameter: number;
  /** The same for the layer projections alone: 4 in f32, 2 in bf16, about 0.52 with QLoRA. */
  linearBytesPerParameter: number;
  qlora: boolean;
  /** The frozen base's compute dtype ("f32" or "bf16"). */
  baseDtype: "f32" | "bf16";
  /** Highest resident set size of the process sampled at each step. */
  peakMemoryBytes: number;
  gradientCheckpointing: boolean;
  /** The most bytes the engine held for backward in any training forwardBackward of this call (0 when no step ran). */
  peakActivationBytes: number;
}

/**
 * Trains LoRA adapters on `dataPath` and writes a PEFT adapter (adapter_config.json,
 * adapter_model.safetensors) and training_summary.json into `outDir`.
 *
 * Steps: `maxSteps` > 0 overrides `epochs` as in HF's Trainer: the run takes exactly that many
 * optimizer steps, beginning as many epochs (each reshuffled) as it needs and stopping part-way
 * through the last. With eval data the eval loss is computed at the end of every epoch, or every
 * `evalSteps` steps when that is set, and always after the last step.
 *
 * A loss or gradient norm that is not finite stops the run at once with LossNotFiniteError
 * naming the step (nothing after it could recover: AdamW would spread NaN through the adapter).
 *
 * Checkpoints: every `saveSteps` optimizer steps, at the end of each epoch and at the last step,
 * `<outDir>/checkpoint-<step>/` receives the adapter (PEFT files), `optimizer.safetensors`
 * (AdamW's `exp_avg` and `exp_avg_sq` of every LoRA tensor) and `trainer_state.json` (step,
 * epoch and position in its batch order, the shuffle and dropout RNG states, schedule, losses,
 * best eval loss); only the newest `saveTotalLimit` are kept. `resumeFrom` continues from one
 * exactly: the final adapter is byte-identical to an uninterrupted run's with the same seed.
 * With eval data `<outDir>/best/` holds the adapter of the lowest eval loss so far.
 *
 * Aborting `signal` stops before the next micro-batch (within one step) and rejects with
 * EngineError CANCELLED; the final adapter is not written then (checkpoints already written stay).
 * @throws TrainingDataError naming file:line for a bad JSONL line; RangeError for a bad option;
 *   CheckpointError for a checkpoint or initial adapter that does not fit.
 */
export async function train(options: TrainOptions, onProgress?: (p: TrainProgress) => void, signal?: AbortSignal): Promise<TrainSummary> {
  const initAdapter = options.initAdapter === undefined ? null : await readInitAdapter(options.initAdapter);
  const o = resolveOptions(options);
  if (initAdapter !== null) checkAdapterSettings(o, options.initAdapter!, initAdapter.adapter, initAdapter.modules);
  const started = performance.now();
  let peakMemoryBytes = process.memoryUsage().rss;
  const sampleMemory = (): void => {
    peakMemoryBytes = Math.max(peakMemoryBytes, process.memoryUsage().rss);
  };
  const tok = await loadTokenizer(options.modelDir);
  const { vocabSize } = await readModelConfig(options.modelDir);
  const trainSet = checkSequences("train", options.train, o.maxSeqLength, vocabSize);
  const evalSet = options.eval === undefined ? null : checkSequences("eval", options.eval, o.maxSeqLength, vocabSize);
  const padId = padTokenId(tok);

  // With packing the unit of shuffling and batching is a packed row, else an example.
  const units = trainingUnits(trainSet.examples, o, padId);
  const plan = planSteps({ units: units.length, batchSize: o.batchSize, gradAccum: o.gradAccum, epochs: o.epochs, maxSteps: o.maxSteps, warmupRatio: o.warmupRatio });
  const { stepsPerEpoch, totalSteps } = plan;
  const schedule = { scheduler: o.scheduler, baseLr: o.lr, totalSteps, warmupSteps: plan.warmupSteps };
  // With warmup a single step has lr 0 (HF's schedule): training it would write an adapter that changes nothing.
  if (peakLr(schedule) === 0) {
    throw new RangeError(
      `the learning rate is 0 at every step: the run has ${totalSteps} optimizer step${totalSteps === 1 ? "" : "s"} and warmup takes ${plan.warmupSteps}; set warmup_ratio 0, or take more steps (more epochs, max_steps, a smaller batch or gradient_accumulation_steps)`,
    );
  }
  const fingerprint = dataFingerprint(units);
  const settings = trajectorySettings(o);

  const resumeDir = options.resumeFrom === undefined ? null : await resolveCheckpoint(options.resumeFrom, options.outDir);
  const resumed = resumeDir === null ? null : await readTrainerState(resumeDir);
  if (resumed !== null && resumeDir !== null) {
    checkResumable(resumeDir, resumed, settings, { units: units.length, fingerprint, stepsPerEpoch });
    if (resumed.totalSteps !== totalSteps) throw new CheckpointError(`cannot resume from ${resumeDir}: ${resumed.totalSteps} steps in all then, ${totalSteps} now (max_steps or num_train_epochs changed)`);
  }

  const model = await Model.load(options.modelDir, { numThreads: o.numThreads, device: o.device });
  try {
    const f32 = model.memory();
    if (o.qlora) model.quantizeNf4(NF4_MODULES);
    if (o.baseDtype === "bf16") model.convertBaseToBf16(NF4_MODULES);  // bf16 projections, or bf16 tiles of NF4 ones
    else if (o.baseDtype !== "f32") throw new Error(`baseDtype must be "f32" or "bf16", got ${JSON.stringify(o.baseDtype)}`);
    model.setGradientCheckpointing(o.gradientCheckpointing);
    let peakActivationBytes = 0;
    const linearParams = projectionParams(model);
    const linearBytes = model.memory().baseBytes - (f32.baseBytes - 4 * linearParams);
    if (o.baseDtype === "bf16") model.convertBaseToBf16(["lm_head"]);
    const memory = model.memory();
    model.loraInit({ r: o.loraR, alpha: o.loraAlpha, dropout: o.loraDropout, useRslora: o.useRslora, targetModules: o.targetModules, seed: o.seed });
    if (resumeDir !== null && resumed !== null) {
      await restoreCheckpoint(model, resumeDir, resumed);
    } else if (initAdapter !== null && options.initAdapter !== undefined) {
      await loadAdapterTensors(model, options.initAdapter, initAdapter.adapter);
    }

    const trainLossPerEpoch: number[] = resumed?.trainLossPerEpoch.slice() ?? [];
    const evalLossPerEpoch: number[] = resumed?.evalLossPerEpoch.slice() ?? [];
    const evalLosses: TrainSummary["evalLosses"] = resumed?.evalHistory?.slice() ?? [];
    // An epoch resumed part-way keeps its earlier steps' counts in the log history (NaN when the checkpoint predates them).
    const trainMeanTokenAccuracyPerEpoch: number[] = (resumed?.trainLossPerEpoch ?? []).map((_, i) => accuracyOf(resumed!.logHistory.filter((h) => h.epoch === i + 1)));
    const logHistory: TrainerState["logHistory"] = resumed?.logHistory.slice() ?? [];
    let bestEvalLoss = resumed?.bestEvalLoss ?? null;
    let bestStep = resumed?.bestStep ?? null;
    const startTokens = resumed?.tokens ?? 0;
    let tokens = startTokens;
    let step = resumed?.globalStep ?? 0;
    const startStep = step;
    const checkpointsWritten: string[] = [];
    const checkCancel = (): void => {
      if (signal?.aborted === true) throw new EngineError("CANCELLED", `training was cancelled after ${step} of ${totalSteps} steps`);
    };
    const adapterContents = () => ({
      r: o.loraR,
      loraAlpha: o.loraAlpha,
      loraDropout: o.loraDropout,
      targetModules: o.targetModules,
      useRslora: o.useRslora,
      baseModelNameOrPath: options.baseModelNameOrPath ?? options.modelDir,
      tensors: [...model.loraShapes()].map(([name, shape]) => ({ name: `base_model.model.${name}`, shape: [...shape], data: model.loraGet(name) })),
    });
    let lastCheckpointStep = step;
    const saveCheckpoint = async (epoch: number, stepInEpoch: number, epochLossSum: number, epochLabels: number, evalLoss: Evaluation | null = null): Promise<void> => {
      const state: TrainerState = {
        format: STATE_FORMAT,
        globalStep: step,
        epoch,
        stepInEpoch,
        stepsPerEpoch,
        totalSteps,
        dataOrder: { algorithm: "mulberry32-fisher-yates", seed: o.seed, epochSeed: epochSeed(o.seed, epoch), units: units.length, fingerprint },
        rng: { shuffle: epochSeed(o.seed, epoch), dropout: dropoutRngState(model) },
        adamwStepCount: model.adamwStepCount(),
        schedule,
        tokens,
        epochLossSum,
        epochLabels,
        trainLossPerEpoch,
        evalLossPerEpoch,
        evalHistory: evalLosses,
        logHistory,
        bestEvalLoss,
        bestStep,
        settings,
      };
      const dir = await writeCheckpoint(options.outDir, state, model, adapterContents());
      checkpointsWritten.push(dir);
      const since = logHistory.filter((h) => h.step > lastCheckpointStep && Number.isFinite(h.loss));
      lastCheckpointStep = step;
      await options.onCheckpoint?.({
        dir,
        step,
        epoch: epoch + stepInEpoch / stepsPerEpoch,
        loss: since.length === 0 ? Number.NaN : since.reduce((a, h) => a + h.loss, 0) / since.length,
        meanTokenAccuracy: accuracyOf(since),
        evalLoss: evalLoss?.loss ?? null,
        evalMeanTokenAccuracy: evalLoss?.meanTokenAccuracy ?? null,
      });
      await rotateCheckpoints(options.outDir, o.saveTotalLimit);
    };

    /** The eval loss and mean token accuracy now (after `step`), recorded, and the best adapter kept when the loss is the lowest. */
    const evaluate = async (epoch: number): Promise<Evaluation> => {
      checkCancel();
      const measured = await meanLoss(model, evalSet!.examples, o.batchSize, padId);
      const evalLoss = measured.loss;
      const meanTokenAccuracy = measured.correct / measured.labels;
      evalLosses.push({ step, epoch, loss: evalLoss, meanTokenAccuracy });
      if (bestEvalLoss === null || evalLoss < bestEvalLoss) {
        bestEvalLoss = evalLoss;
        bestStep = step;
        const best = path.join(options.outDir, "best");
        await writePeftAdapter(best, adapterContents());
        await writeFile(path.join(best, "best_state.json"), `${JSON.stringify({ step, epoch, evalLoss }, null, 2)}\n`);
      }
      return { loss: evalLoss, meanTokenAccuracy };
    };

    const startEpoch = resumed?.epoch ?? 0;
    for (let epoch = startEpoch; epoch < plan.epochs && step < totalSteps; epoch++) {
      const order = shuffled(units.length, epochSeed(o.seed, epoch));
      const resuming = resumed !== null && epoch === startEpoch;
      let epochLossSum = resuming ? resumed.epochLossSum : 0;
      let epochLabels = resuming ? resumed.epochLabels : 0;
      for (let s = resuming ? resumed.stepInEpoch : 0; s < stepsPerEpoch && step < totalSteps; s++) {
        const micro = stepBatches(units, order, s, o, padId);
        const counts = micro.map(labelCount);
        const labels = counts.reduce((a, b) => a + b, 0);
        const lr = lrAt(step, schedule);
        let stepLossSum = 0;
        let stepCorrect = 0;
        model.zeroGrad();
        for (const [i, batch] of micro.entries()) {
          checkCancel();
          const n = counts[i] ?? 0;
          if (n === 0) continue;
          const r = await model.forwardBackward(batch, { gradScale: n / labels, training: true, backward: true }).catch((err: unknown) => {
            throw err instanceof EngineError && err.code === "NAN" ? new LossNotFiniteError(step + 1, "loss", lr, { cause: err }) : err;
          });
          if (!Number.isFinite(r.loss)) throw new LossNotFiniteError(step + 1, "loss", lr);
          peakActivationBytes = Math.max(peakActivationBytes, model.activationBytes());
          stepLossSum += r.loss * n;
          stepCorrect += r.correctCount;
          tokens += realTokens(batch);
        }
        checkCancel();
        const { gradNorm } =
          labels === 0
            ? { gradNorm: 0 }
            : await model.adamwStep({ lr, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm }).catch((err: unknown) => {
                throw err instanceof EngineError && err.code === "NAN" ? new LossNotFiniteError(step + 1, "gradient norm", lr, { cause: err }) : err;
              });
        step++;
        epochLossSum += stepLossSum;
        epochLabels += labels;
        const loss = labels === 0 ? Number.NaN : stepLossSum / labels;
        logHistory.push({ step, epoch: epoch + 1, loss, lr, gradNorm, labels, correct: stepCorrect });
        sampleMemory();
        // The end of an epoch (or of the run, part-way through one with max_steps) is evaluated
        // and checkpointed; so is every eval_steps and save_steps step. The eval loss goes out
        // with the step's progress, the checkpoint after it.
        const epochEnd = s + 1 === stepsPerEpoch;
        const last = step === totalSteps;
        if (epochEnd || last) {
          trainLossPerEpoch.push(epochLabels === 0 ? Number.NaN : epochLossSum / epochLabels);
          trainMeanTokenAccuracyPerEpoch.push(accuracyOf(logHistory.filter((h) => h.epoch === epoch + 1)));
        }
        let evalLoss: Evaluation | null = null;
        if (evalSet !== null && (last || (o.evalSteps > 0 ? step % o.evalSteps === 0 : epochEnd))) {
          evalLoss = await evaluate(epoch + (s + 1) / stepsPerEpoch);
          if (epochEnd || last) evalLossPerEpoch.push(evalLoss.loss);
        }
        const elapsed = (performance.now() - started) / 1000;
        onProgress?.({
          step,
          totalSteps,
          stepsPerEpoch,
          epoch: epoch + 1,
          loss,
          labels,
          correct: stepCorrect,
          lr,
          gradNorm,
          evalLoss: evalLoss?.loss ?? null,
          evalMeanTokenAccuracy: evalLoss?.meanTokenAccuracy ?? null,
          tokensPerSecond: elapsed > 0 ? (tokens - startTokens) / elapsed : 0,
          etaSeconds: (elapsed / (step - startStep)) * (totalSteps - step),
        });
        if (epochEnd || last || (o.saveSteps > 0 && step % o.saveSteps === 0)) {
          checkCancel();
          if (epochEnd) await saveCheckpoint(epoch + 1, 0, 0, 0, evalLoss);
          else await saveCheckpoint(epoch, s + 1, epochLossSum, epochLabels, evalLoss);
        }
      }
    }

    if (o.loadBestAtEnd && bestEvalLoss !== null) {
      await mkdir(options.outDir, { recursive: true });
      for (const file of ["adapter_config.json", "adapter_model.safetensors"]) {
        await copyFile(path.join(options.outDir, "best", file), path.join(options.outDir, file));
      }
    } else {
      await writePeftAdapter(options.outDir, adapterContents());
    }
    sampleMemory();
    const summary: TrainSummary = {
      trainLossPerEpoch,
      trainMeanTokenAccuracyPerEpoch,
      evalLossPerEpoch,
      evalLosses,
      tokens,
      seconds: (performance.now() - started) / 1000,
      truncatedExamples: trainSet.truncated + (evalSet?.truncated ?? 0),
      steps: step,
      adapterDir: options.outDir,
      checkpointsWritten,
      checkpoints: (await listCheckpoints(options.outDir)).map((c) => c.dir),
      bestEvalLoss,
      bestStep,
      resumedFromStep: resumed === null ? null : resumed.globalStep,
      baseBytesPerParameter: memory.baseParams > 0 ? memory.baseBytes / memory.baseParams : 0,
      linearBytesPerParameter: linearParams > 0 ? linearBytes / linearParams : 0,
      qlora: o.qlora,
      baseDtype: o.baseDtype,
      peakMemoryBytes,
      gradientCheckpointing: o.gradientCheckpointing,
      peakActivationBytes,
    };
    await mkdir(options.outDir, { recursive: true });
    await writeFile(path.join(options.outDir, "training_summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
    return summary;
  } finally {
    model.free();
  }
}

/** An evaluation of the eval set after a step. */
interface Evaluation {
  loss: number;
  meanTokenAccuracy: number;
}

/** The share of the labels of `steps` their argmax predicted: NaN when none had labels, or a step predates the counts. */
function accuracyOf(steps: readonly TrainerState["logHistory"][number][]): number {
  let labels = 0;
  let correct = 0;
  for (const h of steps) {
    if (h.labels === undefined || h.correct === undefined) return Number.NaN;
    labels += h.labels;
    correct += h.correct;
  }
  return labels === 0 ? Number.NaN : correct / labels;
}

/** Element count of the 7 projections of every layer (what QLoRA quantises). */
function projectionParams(model: Model): number {
  const c = model.config;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return c.numLayers * (2 * q * c.hiddenSize + 2 * kv * c.hiddenSize + 3 * c.intermediateSize * c.hiddenSize);
}
