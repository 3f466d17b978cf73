/**
 * Reading the golden cases of test/golden (written by test/reference.py; layout in
 * test/README.md) and comparing engine outputs with them. Test-only: not compiled into dist.
 */
import { readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { writeTinyModel, type TinyModelOptions } from "@lathe/models";
import type { LoraModule } from "../native.js";

export const ENGINE_DIR = fileURLToPath(new URL("../..", import.meta.url));
export const GOLDEN_DIR = path.join(ENGINE_DIR, "test", "golden");

/** The tolerance of test/README.md: |got − want| ≤ RTOL · max|want| per tensor, and relative for scalars. */
export const RTOL = 1e-4;

/** Merged weights (README): both sides round one f64 value to f32, so they agree to f32 rounding. */
export const MERGE_RTOL = 1e-6;

export interface GoldenCase {
  name: string;
  description: string;
  model: TinyModelOptions;
  configPatch: Record<string, unknown> | null;
  batch: number;
  seq: number;
  tokens: number[];
  labels: number[];
  positions: number[];
  segments: number[] | null;
  lora: { r: number; alpha: number; dropout: number; useRslora: boolean; targetModules: LoraModule[] };
  optimizer: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; maxGradNorm: number; steps: number };
}

export interface GoldenExpected {
  torch: string;
  loss: number;
  labelCount: number;
  losses: number[];
  gradNorms: number[];
}

export async function goldenCaseNames(root = GOLDEN_DIR): Promise<string[]> {
  const entries = await readdir(root, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
}

export async function readGoldenCase(name: string, root = GOLDEN_DIR): Promise<{ testCase: GoldenCase; expected: GoldenExpected; init: Map<string, Float32Array>; tensors: Map<string, Float32Array> }> {
  const dir = path.join(root, name);
  return {
    testCase: JSON.parse(await readFile(path.join(dir, "case.json"), "utf8")) as GoldenCase,
    expected: JSON.parse(await readFile(path.join(dir, "expected.json"), "utf8")) as GoldenExpected,
    init: await readF32Safetensors(path.join(dir, "lora-init.safetensors")),
    tensors: await readF32Safetensors(path.join(dir, "expected.safetensors")),
  };
}

/** Writes the case's tiny model (writeTinyModel is deterministic) and applies its config patch. */
export async function writeCaseModel(testCase: GoldenCase, dir: string): Promise<void> {
  await writeTinyModel(dir, testCase.model);
  if (testCase.configPatch !== null) {
    const file = path.join(dir, "config.json");
    const config = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    await writeFile(file, `${JSON.stringify({ ...config, ...testCase.configPatch }, null, 2)}\n`);
  }
}

/** The F32 tensors of a safetensors file (8-byte LE header length, JSON header, data). */
export async function readF32Safetensors(file: string): Promise<Map<string, Float32Array>> {
  const bytes = await readFile(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (info.dtype !== "F32") throw new Error(`${file}: ${name} is ${info.dtype}, expected F32`);
    const [start, end] = info.data_offsets;
    const data = bytes.subarray(8 + headerLength + start, 8 + headerLength + end);
    // Copy: the slice of a pooled Buffer need not be 4-byte aligned.
    out.set(name, new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)));
  }
  return out;
}

/**
 * AdamW divides each element's moment by its own RMS, so an element whose gradient is ~1e-6 of
 * the tensor's largest carries its f32 rounding into a full-size move: parameters after N steps
 * get an extra absolute allowance of ADAM_MOVE_TOL · lr · N (0.1 % of the largest Adam move).
 */
export const ADAM_MOVE_TOL = 1e-3;

/** Throws, naming the tensor and its worst element, unless max|got − want| ≤ rtol · max|want| + atol. */
export function expectCloseArrays(what: string, got: Float32Array, want: Float32Array, rtol = RTOL, atol = 0): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, expected ${want.length}`);
  let scale = 0;
  let worst = 0;
  let at = 0;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]!));
    const err = Math.abs(got[i]! - want[i]!);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  if (!(worst <= rtol * scale + atol)) {
    throw new Error(`${what}: max |got − want| = ${worst} at [${at}] (got ${got[at]}, want ${want[at]}) exceeds ${rtol} × max|want| + ${atol} = ${rtol * scale + atol}`);
  }
}

/** Throws unless |got − want| ≤ rtol · |want|. */
export function expectCloseScalar(what: string, got: number, want: number, rtol = RTOL): void {
  if (!(Math.abs(got - want) <= rtol * Math.abs(want))) throw new Error(`${what}: got ${got}, want ${want} (relative tolerance ${rtol})`);
}
