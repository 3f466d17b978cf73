/** The errors the engine's public surface throws, in one place. */
import type { NativeErrorCode } from "./native.js";

/** Codes an EngineError carries (see native.NativeErrorCode). */
export type EngineErrorCode = NativeErrorCode;

/** A failure of the engine or of a call into it, with the engine's message. */
export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A checkpoint that cannot be resumed (missing, malformed, or from a run with other settings or data). */
export class CheckpointError extends Error {
  override readonly name = "CheckpointError";
}

/** A data file line that is not a usable example; the message names file:line. */
export class TrainingDataError extends Error {
  override readonly name = "TrainingDataError";
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}:${line}: ${message}`, options);
  }
}

/**
 * The training loss (or the gradient norm) stopped being a finite number at optimizer step
 * `step` (1-based): the run diverged, and every step after it would only spread NaN through the
 * adapter. The message says what to change.
 */
export class LossNotFiniteError extends Error {
  override readonly name = "LossNotFiniteError";
  constructor(
    readonly step: number,
    readonly what: "loss" | "gradient norm",
    readonly lr: number,
    options?: { cause?: unknown },
  ) {
    super(
      `the training ${what} is not finite at step ${step} (learning rate ${lr.toExponential(2)}): the run diverged; lower learning_rate (e.g. to a tenth), keep max_grad_norm at 1 or below, or warm up longer (warmup_ratio)`,
      options,
    );
  }
}
