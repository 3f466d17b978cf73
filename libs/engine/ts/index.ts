/**
 * @lathe/engine — the training engine's public surface: a Model over the native addon
 * (binding/binding.cpp over include/lathe_engine.h), the LoRA training loop, evaluation and
 * merging. This file only re-exports; the code lives beside it:
 * - native.ts: every type that crosses the Node-API boundary (internal);
 * - addon.ts: finding and loading the addon, turning what it throws into EngineErrors;
 * - errors.ts: EngineError, CheckpointError, LossNotFiniteError, TrainingDataError;
 * - model.ts: Model, engineConfig, devices, nf4Roundtrip, loraMerge;
 * - schedule.ts: learning-rate schedules and step plans; merge.ts: merging an adapter folder into its base;
 * - hidden-states.ts: one layer's hidden states of a model folder (BERTScore's embeddings);
 * - train/: options (config.ts), data to batches (batches.ts), checkpoints (checkpoint.ts),
 *   starting from an adapter (init-adapter.ts), evaluation (eval-loss.ts), the loop (loop.ts).
 */
export type { LoraModule, ForwardBackwardResult, AdamwResult, MemoryReport, Nf4RoundtripResult, CpuInfo } from "./native.js";
export { ADDON_PATH } from "./addon.js";
export { EngineError, CheckpointError, LossNotFiniteError, TrainingDataError } from "./errors.js";
export type { EngineErrorCode } from "./errors.js";
export { Model, NF4_MODULES, cpuInfo, devices, engineConfig, loraMerge, nf4Roundtrip } from "./model.js";
export type { AdamwOptions, Batch, ForwardBackwardOptions, HiddenStatesBatchOptions, LoraOptions, TokenSequences } from "./model.js";
export { hiddenStates } from "./hidden-states.js";
export type { HiddenStatesOptions } from "./hidden-states.js";
export { train } from "./train/loop.js";
export type { TrainProgress, TrainSummary } from "./train/loop.js";
export { recipeFromAdapter } from "./train/init-adapter.js";
export { sequencesFromFile } from "./train/batches.js";
export type { TrainOptions } from "./train/config.js";
export { evalLoss, ReferenceScorer } from "./train/eval-loss.js";
export type { EvalLossOptions, EvalLossResult, ReferenceScore } from "./train/eval-loss.js";
export { mergeLoraFolder } from "./merge.js";
export type { MergeLoraFolderOptions } from "./merge.js";
export { lrAt, peakLr, planSteps, warmupSteps, SCHEDULERS } from "./schedule.js";
export type { SchedulerName, ScheduleOptions, StepPlan } from "./schedule.js";
