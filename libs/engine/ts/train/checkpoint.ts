/**
 * Checkpoints: `<outDir>/checkpoint-<step>/` folders holding the adapter (PEFT files), AdamW's
 * moments (optimizer.safetensors) and trainer_state.json; writing them whole or not at all,
 * rotating old ones away, finding and reading one to resume from, and refusing one whose run
 * had other settings or data.
 */
import { createHash } from "node:crypto";
import { readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { ModelFormatError, readJsonFile, readSafetensorsHeader, readTensorF32, writePeftAdapter, writeSafetensors, type LabeledSequence } from "@lathe/models";
import { CheckpointError } from "../errors.js";
import type { Model } from "../model.js";
import type { SchedulerName } from "../schedule.js";
import type { Resolved } from "./config.js";
import { loadAdapterTensors } from "./init-adapter.js";

/** The settings that fix a run's trajectory; a resumed run must have the same. */
const TRAJECTORY_KEYS = [
  "loraR", "loraAlpha", "loraDropout", "targetModules", "useRslora", "epochs", "batchSize", "gradAccum", "lr", "scheduler", "warmupRatio",
  "weightDecay", "maxGradNorm", "maxSeqLength", "packing", "trainOnInputs", "seed", "qlora",
] as const;

export const STATE_FORMAT = "lathe-trainer-state/1";
const TRAINER_STATE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;

/** trainer_state.json of a checkpoint: everything but the tensors that a resumed run needs to continue exactly. */
export interface TrainerState {
  format: typeof STATE_FORMAT;
  /** Optimizer steps taken. */
  globalStep: number;
  /** 0-based epoch to continue in (== epochs when the run is complete). */
  epoch: number;
  /** Optimizer steps of that epoch already taken: the position in its batch order. */
  stepInEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  /** How the batch order is made: a Fisher–Yates permutation driven by mulberry32, reseeded each epoch. */
  dataOrder: { algorithm: "mulberry32-fisher-yates"; seed: number; epochSeed: number; units: number; fingerprint: string };
  rng: {
    /** The shuffle generator's state at the start of the current epoch (it is reseeded per epoch). */
    shuffle: number;
    /** The engine's dropout PRNG (xoshiro256**), four 64-bit words in hex. */
    dropout: string[];
  };
  /** AdamW's bias-correction step counter (steps with labels). */
  adamwStepCount: number;
  schedule: { scheduler: SchedulerName; baseLr: number; totalSteps: number; warmupSteps: number };
  /** Tokens processed so far, and the running sums of the current epoch's train loss. */
  tokens: number;
  epochLossSum: number;
  epochLabels: number;
  trainLossPerEpoch: number[];
  evalLossPerEpoch: number[];
  /** Every eval loss computed (per epoch, or every eval_steps); absent in states written before eval_steps. */
  evalHistory?: { step: number; epoch: number; loss: number; meanTokenAccuracy?: number }[];
  /**
   * Every optimizer step: its loss, learning rate, gradient norm and, in states written since mean
   * token accuracy, its labels and how many of them the argmax predicted.
   */
  logHistory: { step: number; epoch: number; loss: number; lr: number; gradNorm: number; labels?: number; correct?: number }[];
  bestEvalLoss: number | null;
  bestStep: number | null;
  settings: Record<(typeof TRAJECTORY_KEYS)[number], unknown>;
}

/** sha256 over every training unit's ids and labels: a resumed run must see the same data. */
export function dataFingerprint(units: readonly LabeledSequence[]): string {
  const hash = createHash("sha256");
  for (const u of units) hash.update(`${u.ids.join(",")}|${u.labels.join(",")}\n`);
  return hash.digest("hex");
}

/** checkpoint-N folders of `outDir`, oldest first. */
export async function listCheckpoints(outDir: string): Promise<{ step: number; dir: string }[]> {
  let names: string[];
  try {
    names = await readdir(outDir);
  } catch {
    return [];
  }
  const found: { step: number; dir: string }[] = [];
  for (const name of names) {
    const m = CHECKPOINT_DIR.exec(name);
    if (m !== null) found.push({ step: Number(m[1]), dir: path.join(outDir, name) });
  }
  return found.sort((a, b) => a.step - b.step);
}

export async function rotateCheckpoints(outDir: string, keep: number): Promise<void> {
  if (keep <= 0) return;
  const all = await listCheckpoints(outDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await rm(old.dir, { recursive: true, force: true });
}

/** A checkpoint folder from `resumeFrom`: a folder, or "latest" (the newest checkpoint-N under outDir). */
export async function resolveCheckpoint(resumeFrom: string, outDir: string): Promise<string> {
  if (resumeFrom === "latest") {
    const newest = (await listCheckpoints(outDir)).at(-1);
    if (newest === undefined) throw new CheckpointError(`resume from latest: ${outDir} has no checkpoint-<step> folder`);
    return newest.dir;
  }
  const isDir = await stat(resumeFrom).then((s) => s.isDirectory(), () => false);
  if (!isDir) throw new CheckpointError(`resume: ${resumeFrom} is not a folder`);
  return resumeFrom;
}

export async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = path.join(dir, TRAINER_STATE);
  const state = await asCheckpointError(file, readJsonFile(file));
  if (typeof state !== "object" || state === null || (state as { format?: unknown }).format !== STATE_FORMAT) {
    throw new CheckpointError(`${file}: not a Lathe trainer state (format ${STATE_FORMAT})`);
  }
  return state as TrainerState;
}

/** A checkpoint file that cannot be read is a CheckpointError saying why (the bounded readers' own words). */
async function asCheckpointError<T>(file: string, p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    const why = err instanceof ModelFormatError ? err.message.replace(`${file}: `, "") : err instanceof Error ? err.message : String(err);
    throw new CheckpointError(`${file}: ${why}`, { cause: err });
  });
}

/** Refuses a checkpoint whose run had other settings or data, naming each difference. */
export function checkResumable(dir: string, state: TrainerState, settings: TrainerState["settings"], data: { units: number; fingerprint: string; stepsPerEpoch: number }): void {
  const diffs: string[] = [];
  for (const key of TRAJECTORY_KEYS) {
    const was = JSON.stringify(state.settings[key]);
    const now = JSON.stringify(settings[key]);
    if (was !== now) diffs.push(`${key} was ${was}, now ${now}`);
  }
  if (state.dataOrder.units !== data.units || state.dataOrder.fingerprint !== data.fingerprint) {
    diffs.push(`the training data differs (${state.dataOrder.units} units then, ${data.units} now, or other content)`);
  }
  if (diffs.length > 0) throw new CheckpointError(`cannot resume from ${dir}: ${diffs.join("; ")}`);
  if (state.stepsPerEpoch !== data.stepsPerEpoch) throw new CheckpointError(`cannot resume from ${dir}: ${state.stepsPerEpoch} steps per epoch then, ${data.stepsPerEpoch} now`);
}

/** The settings of a run that a checkpoint records and a resumed run must repeat (targetModules sorted). */
export function trajectorySettings(o: Resolved): TrainerState["settings"] {
  return Object.fromEntries(TRAJECTORY_KEYS.map((k) => [k, k === "targetModules" ? [...o.targetModules].sort() : o[k]])) as TrainerState["settings"];
}

/** The engine's dropout PRNG state as trainer_state.json keeps it: four 64-bit words in hex. */
export function dropoutRngState(model: Model): string[] {
  return [...model.rngState()].map((w) => w.toString(16).padStart(16, "0"));
}

/**
 * Writes `<outDir>/checkpoint-<globalStep>/`: the adapter, AdamW's moments and `state`. It is
 * written beside as `.tmp` and renamed, so a checkpoint is complete or absent, never half-written.
 * @returns the checkpoint folder.
 */
export async function writeCheckpoint(outDir: string, state: TrainerState, model: Model, adapter: Parameters<typeof writePeftAdapter>[1]): Promise<string> {
  const dir = path.join(outDir, `checkpoint-${state.globalStep}`);
  const tmp = `${dir}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await writePeftAdapter(tmp, adapter);
  await writeSafetensors(
    path.join(tmp, OPTIMIZER_FILE),
    [...model.loraShapes()].flatMap(([name, shape]) => {
      const { m, v } = model.adamwStateGet(name);
      return [
        { name: `${name}.exp_avg`, dtype: "F32" as const, shape: [...shape], data: m },
        { name: `${name}.exp_avg_sq`, dtype: "F32" as const, shape: [...shape], data: v },
      ];
    }),
    { format: "pt", optimizer: "adamw" },
  );
  await writeFile(path.join(tmp, TRAINER_STATE), `${JSON.stringify(state, null, 2)}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir); // a checkpoint is complete or absent, never half-written
  return dir;
}

/** Puts a checkpoint's LoRA tensors, AdamW moments and step counter and the dropout PRNG state into `model` (after loraInit). */
export async function restoreCheckpoint(model: Model, dir: string, state: TrainerState): Promise<void> {
  await loadAdapterTensors(model, dir);
  await loadOptimizer(model, dir);
  model.setAdamwStepCount(state.adamwStepCount);
  model.setRngState(BigUint64Array.from(state.rng.dropout, (h) => BigInt(`0x${h}`)));
}

/** Restores AdamW's moments from a checkpoint's optimizer.safetensors (F32, read by libs/models' bounded reader). */
async function loadOptimizer(model: Model, dir: string): Promise<void> {
  const file = path.join(dir, OPTIMIZER_FILE);
  const { tensors } = await asCheckpointError(file, readSafetensorsHeader(file));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const name of model.loraShapes().keys()) {
    const m = byName.get(`${name}.exp_avg`);
    const v = byName.get(`${name}.exp_avg_sq`);
    if (m === undefined || v === undefined) throw new CheckpointError(`${file}: no moments for \`${name}\``);
    for (const t of [m, v]) if (t.dtype !== "F32") throw new CheckpointError(`${file}: tensor ${t.name} is ${t.dtype}, expected F32`);
    model.adamwStateSet(name, await asCheckpointError(file, readTensorF32(m)), await asCheckpointError(file, readTensorF32(v)));
  }
}
