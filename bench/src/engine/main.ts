#!/usr/bin/env node
/**
 * bench/engine: tokens/s of one LoRA training step (forward, backward, clipping, AdamW) of the
 * engine against PyTorch on the same machine, same model, same batch, same thread count.
 * PyTorch is Debian's (CPU, float32) running the plain-torch reference model of the engine's
 * tests; the engine runs through its Node binding, as the trainer will.
 *
 *   npm run bench:engine -- [--hidden 256] [--layers 4] [--batch 4] [--seq 256] [--r 8] [--threads 2] [--steps 5]
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Model } from "@lathe/engine";
import { writeTinyModel } from "@lathe/models";

const { values } = parseArgs({
  options: {
    hidden: { type: "string", default: "256" },
    layers: { type: "string", default: "4" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    r: { type: "string", default: "8" },
    threads: { type: "string", default: "2" },
    steps: { type: "string", default: "5" },
  },
});
const n = (k: keyof typeof values) => Number(values[k]);
const [hidden, layers, batch, seq, r, threads, steps] = [n("hidden"), n("layers"), n("batch"), n("seq"), n("r"), n("threads"), n("steps")];

const dir = join(mkdtempSync(join(tmpdir(), "lathe-bench-engine-")), "model");
await writeTinyModel(dir, { hidden, layers, heads: hidden / 64, kvHeads: Math.max(1, hidden / 128), intermediate: hidden * 4, seed: 1 });
console.log(`model: hidden ${hidden}, ${layers} layers, vocab 512; batch ${batch} × seq ${seq}; LoRA r=${r} on q,k,v,o,gate,up,down; ${threads} threads; ${steps} steps`);

const model = await Model.load(dir, { numThreads: threads });
model.loraInit({ r, alpha: 2 * r, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], seed: 1 });
const total = batch * seq;
let state = 1;
const tokens = Int32Array.from({ length: total }, () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % 512);
const labels = Int32Array.from({ length: total }, (_, i) => ((i + 1) % seq === 0 ? -100 : tokens[i + 1]!));
const positions = Int32Array.from({ length: total }, (_, i) => i % seq);
const step = async () => {
  model.zeroGrad();
  const { loss } = await model.forwardBackward({ tokens, labels, positions, segments: null, batch, seq });
  await model.adamwStep({ lr: 1e-4 });
  return loss;
};
await step(); // warm-up
const start = process.hrtime.bigint();
let loss = 0;
for (let i = 0; i < steps; i++) loss = await step();
const ours = (total * steps) / (Number(process.hrtime.bigint() - start) / 1e9);
model.free();

const script = fileURLToPath(new URL("../../engine/torch_step.py", import.meta.url));
const peer = JSON.parse(execFileSync("/usr/bin/python3", [script, dir, String(batch), String(seq), String(r), String(threads), String(steps)], { encoding: "utf8" }).trim()) as { tokens_per_s: number; loss: number; matmul_gflops: number };
console.log(`lathe engine ${ours.toFixed(0).padStart(8)} tokens/s  (loss ${loss.toFixed(3)})`);
const version = execFileSync("/usr/bin/python3", ["-c", "import torch; print(torch.__version__, torch.__config__.show().split('BLAS_INFO=')[1].split(',')[0])"], { encoding: "utf8" }).trim();
console.log(`pytorch      ${peer.tokens_per_s.toFixed(0).padStart(8)} tokens/s  (loss ${peer.loss.toFixed(3)}; torch ${version} BLAS, ${peer.matmul_gflops.toFixed(1)} GFLOP/s on a 512² matmul)`);
console.log(`engine/pytorch ${(ours / peer.tokens_per_s).toFixed(2)}`);
rmSync(dir, { recursive: true, force: true });
