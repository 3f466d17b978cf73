#!/usr/bin/env node
/**
 * bench/engine: tokens/s of one LoRA training step (forward, backward, clipping, AdamW) of the
 * engine against PyTorch on the same machine, same model, same batch and LoRA, each side at its
 * best thread setting, taking turns in one run so that load from elsewhere hits both.
 *
 * The peer is Debian's torch (float32) running the plain-torch reference model of the engine's
 * tests on OpenBLAS: torch calls whatever libblas.so.3 is, and the default (netlib) one is ~50×
 * slower, so the bench checks which BLAS torch loaded and installs libopenblas0-pthread with
 * apt-get when it may (root), or stops. The peer tries BLAS threads × torch intra-op threads and
 * keeps its fastest split; the engine runs on --threads. Each side runs in its own process, so
 * each one's peak RSS is its own. The engine's achieved GFLOP/s (model FLOPs: the base's forward
 * and input-gradient products, attention, LoRA) is printed against the machine's f32 FMA peak
 * measured by a register-only micro-benchmark on the same threads.
 *
 *   npm run bench:engine -- [--shapes small,135m,360m] [--batch 4] [--seq 256] [--threads 2]
 *                           [--steps 3] [--rounds 2] [--splits 2x1,1x2,1x1,2x2] [--base-dtype f32,bf16]
 *                           [--peer-cores auto,Haswell]
 *
 * --peer-cores: the OpenBLAS kernels the peer is tried with (OPENBLAS_CORETYPE; auto = the library's
 * own CPU detection, the variable removed). By default auto and, when the environment sets
 * OPENBLAS_CORETYPE, that one too: a machine that pins Haswell kernels on an AVX-512 CPU halves the
 * peer's matmul speed, and a ratio against that is not a benchmark. A core type whose f32 product at
 * the step's shape is off (relative error > 1e-4 against float64) is refused; the fastest kept.
 *
 * --base-dtype: the engine's frozen linears in f32, bf16 (Model.convertBaseToBf16: bf16 weights,
 * bf16 x bf16 products summed in f32) or both, each against the same f32 peer.
 *
 * Shapes: small (hidden 256, 4 layers, vocab 512, untied, r 8); 135m (SmolLM-135M: 30 × 576,
 * 9/3 heads, ff 1536, vocab 49152, tied, r 16); 360m (SmolLM-360M: 32 × 960, 15/5 heads, ff 2560,
 * vocab 49152, tied, r 16). Weights are random (writeTinyModel); speed does not depend on them.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Model, cpuInfo, type LoraModule } from "@lathe/engine";
import { writeTinyModel } from "@lathe/models";

interface Shape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  tied: boolean;
  r: number;
}
const SHAPES: Record<string, Shape> = {
  small: { hidden: 256, layers: 4, heads: 4, kvHeads: 2, intermediate: 1024, vocab: 512, tied: false, r: 8 },
  "135m": { hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152, tied: true, r: 16 },
  "360m": { hidden: 960, layers: 32, heads: 15, kvHeads: 5, intermediate: 2560, vocab: 49152, tied: true, r: 16 },
};
const TARGETS: LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

const { values } = parseArgs({
  options: {
    shapes: { type: "string", default: "small,135m,360m" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    threads: { type: "string", default: "2" },
    steps: { type: "string", default: "3" },
    rounds: { type: "string", default: "2" },
    splits: { type: "string", default: "" },
    "base-dtype": { type: "string", default: "f32,bf16" },
    "peer-cores": { type: "string", default: "" },
    // internal: one side's run in a child process
    worker: { type: "string", default: "" },
    model: { type: "string", default: "" },
    r: { type: "string", default: "8" },
  },
});
const num = (k: "batch" | "seq" | "threads" | "steps" | "rounds" | "r") => Number(values[k]);
const [batch, seq, threads, steps, rounds] = [num("batch"), num("seq"), num("threads"), num("steps"), num("rounds")];

interface EngineResult {
  tokens_per_s: number;
  loss: number;
  peak_rss_bytes: number;
  base_bytes: number;
  activation_bytes: number;
}
interface PeerResult {
  tokens_per_s: number;
  loss: number;
  steps_trained: number;
  split: { blas_threads: number; torch_threads: number };
  tried: { blas_threads: number; torch_threads: number; tokens_per_s: number }[];
  blas: string;
  openblas_config: string | null;
  openblas_core: string | null;
  openblas_coretype_env: string | null;
  blas_max_rel_err: number;
  torch: string;
  matmul_gflops: number;
  matmul_square_gflops: number;
  peak_rss_bytes: number;
}

/** The batch both sides train on: a 32-bit LCG, as torch_step.py draws it. */
function batchOf(vocab: number) {
  const total = batch * seq;
  let state = 1;
  const tokens = Int32Array.from({ length: total }, () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % vocab);
  const labels = Int32Array.from({ length: total }, (_, i) => ((i + 1) % seq === 0 ? -100 : tokens[i + 1]!));
  const positions = Int32Array.from({ length: total }, (_, i) => i % seq);
  return { tokens, labels, positions };
}

async function engineWorker(dir: string, r: number, dtype: string): Promise<EngineResult> {
  const model = await Model.load(dir, { numThreads: threads, device: "cpu" });
  if (dtype === "bf16") model.convertBaseToBf16();
  else if (dtype !== "f32") throw new Error(`--base-dtype ${dtype}: f32 or bf16`);
  model.loraInit({ r, alpha: 2 * r, targetModules: TARGETS, seed: 1 });
  const { tokens, labels, positions } = batchOf(model.config.vocabSize);
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
  const tokensPerS = (batch * seq * steps) / (Number(process.hrtime.bigint() - start) / 1e9);
  const mem = model.memory();
  const activations = model.activationBytes();
  model.free();
  return { tokens_per_s: tokensPerS, loss, peak_rss_bytes: process.resourceUsage().maxRSS * 1024, base_bytes: mem.baseBytes, activation_bytes: activations };
}

if (values.worker === "engine") {
  console.log(JSON.stringify(await engineWorker(values.model, num("r"), values["base-dtype"])));
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);
const script = fileURLToPath(new URL("../../engine/torch_step.py", import.meta.url));
const PY = "/usr/bin/python3";

function runEngine(dir: string, r: number, dtype: string): EngineResult {
  const args = [self, "--worker", "engine", "--model", dir, "--r", String(r), "--base-dtype", dtype, "--batch", String(batch), "--seq", String(seq), "--threads", String(threads), "--steps", String(steps)];
  return JSON.parse(execFileSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 20 }).trim().split("\n").pop()!) as EngineResult;
}
/** The peer with OpenBLAS's kernels for `core` ("auto": its own detection). */
function runPeer(dir: string, r: number, splits: string, core: string): PeerResult {
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  if (core !== "auto") env.OPENBLAS_CORETYPE = core;
  const out = execFileSync(PY, [script, dir, String(batch), String(seq), String(r), String(steps), splits], { encoding: "utf8", maxBuffer: 1 << 20, env });
  return JSON.parse(out.trim().split("\n").pop()!) as PeerResult;
}

/** The BLAS Debian's torch loads: installs OpenBLAS when it is the reference BLAS and we are root. */
function ensureOpenBlas(): void {
  const probe = () =>
    execFileSync(PY, ["-c", "import torch, ctypes\nm=open('/proc/self/maps').read()\nprint(sorted({l.split()[-1] for l in m.splitlines() if 'blas' in l.split()[-1].lower()}))"], { encoding: "utf8" }).trim();
  let libs = probe();
  if (libs.includes("openblas")) return;
  if (process.getuid?.() !== 0) throw new Error(`torch loads ${libs}, not OpenBLAS: run apt-get install -y libopenblas0-pthread as root (a peer on the reference BLAS is not a benchmark)`);
  console.log(`torch loads ${libs}; installing libopenblas0-pthread (Debian package) for a fair peer`);
  execFileSync("apt-get", ["install", "-y", "libopenblas0-pthread"], { stdio: "inherit", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  libs = probe();
  if (!libs.includes("openblas")) throw new Error(`torch still loads ${libs} after installing OpenBLAS`);
}

/** Model FLOPs per trained token: frozen linears forward and input-gradient (2 + 2 per weight), causal attention (3 × its forward), LoRA (6 r (in + out)). */
function flopsPerToken(s: Shape): number {
  const d = s.hidden / s.heads, qd = s.heads * d, kd = s.kvHeads * d;
  const dims: [number, number][] = [[s.hidden, qd], [s.hidden, kd], [s.hidden, kd], [qd, s.hidden], [s.hidden, s.intermediate], [s.hidden, s.intermediate], [s.intermediate, s.hidden]];
  let perLayer = 0;
  for (const [i, o] of dims) perLayer += 4 * i * o + 6 * s.r * (i + o);
  perLayer += 3 * 4 * qd * ((seq + 1) / 2);
  return s.layers * perLayer + 4 * s.vocab * s.hidden;
}

const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
const load = () => loadavg()[0]!.toFixed(1);

ensureOpenBlas();
const cpu = cpuInfo({ threads, seconds: 2 });
console.log(`engine GEMM kernel ${cpu.gemmKernel}; measured f32 FMA peak ${cpu.fmaPeakGflops.toFixed(0)} GFLOP/s on ${threads} threads (load average ${load()})`);
const peerCores = (values["peer-cores"] || ["auto", process.env.OPENBLAS_CORETYPE ?? "auto"].join(",")).split(",").filter((v, i, a) => v && a.indexOf(v) === i);
const BLAS_TOLERANCE = 1e-4;
const splitList = values.splits || [`${threads}x1`, `1x${threads}`, "1x1", `${threads}x${threads}`].filter((v, i, a) => a.indexOf(v) === i).join(",");

for (const name of values.shapes.split(",")) {
  const s = SHAPES[name];
  if (!s) throw new Error(`unknown shape ${name} (small, 135m, 360m)`);
  const root = mkdtempSync(join(tmpdir(), "lathe-bench-engine-"));
  const dir = join(root, "model");
  await writeTinyModel(dir, { hidden: s.hidden, layers: s.layers, heads: s.heads, kvHeads: s.kvHeads, intermediate: s.intermediate, vocab: s.vocab, tied: s.tied, seed: 1 });
  const fpt = flopsPerToken(s);
  console.log(`\n== ${name}: hidden ${s.hidden}, ${s.layers} layers, ${s.heads}/${s.kvHeads} heads, ff ${s.intermediate}, vocab ${s.vocab}${s.tied ? " tied" : ""}; batch ${batch} × seq ${seq}; LoRA r ${s.r} on ${TARGETS.length} projections; ${steps} timed steps per run; ${(fpt / 1e6).toFixed(0)} MFLOP per token`);
  const dtypes = values["base-dtype"].split(",");
  const bestEngine = new Map<string, EngineResult>();
  let bestPeer: PeerResult | null = null;
  let splits = splitList;
  let core = peerCores[0]!;
  for (let round = 1; round <= rounds; round++) {
    const before = load();
    const es = dtypes.map((dt) => [dt, runEngine(dir, s.r, dt)] as const);
    let p: PeerResult;
    if (round === 1) {
      // Every core type in turn, each with every thread split; the fastest correct one is the peer.
      const tried = peerCores.map((c) => [c, runPeer(dir, s.r, splits, c)] as const);
      for (const [c, q] of tried) {
        const ok = q.blas_max_rel_err <= BLAS_TOLERANCE;
        console.log(`peer (OPENBLAS_CORETYPE ${c === "auto" ? "unset" : c}): torch ${q.torch} on ${q.blas} (${q.openblas_config ?? "not OpenBLAS"}; core ${q.openblas_core ?? "-"}): matmul ${q.matmul_gflops.toFixed(0)} GFLOP/s at the step's shape, ${q.matmul_square_gflops.toFixed(0)} at 512², relative error ${q.blas_max_rel_err.toExponential(1)}${ok ? "" : " — REFUSED (wrong products)"}`);
        console.log(`  splits (BLAS threads × torch threads: tokens/s): ${q.tried.map((t) => `${t.blas_threads}×${t.torch_threads}: ${t.tokens_per_s.toFixed(0)}`).join(", ")}; best ${q.split.blas_threads}×${q.split.torch_threads}: ${q.tokens_per_s.toFixed(1)} tokens/s`);
      }
      const usable = tried.filter(([, q]) => q.blas_max_rel_err <= BLAS_TOLERANCE);
      if (usable.length === 0) throw new Error("no OpenBLAS core type gave correct f32 products: no fair peer");
      [core, p] = usable.reduce((a, b) => (b[1].tokens_per_s > a[1].tokens_per_s ? b : a));
      splits = `${p.split.blas_threads}x${p.split.torch_threads}`;
      if (usable.length > 1) console.log(`peer: OPENBLAS_CORETYPE ${core === "auto" ? "unset" : core}, split ${splits} from here on`);
    } else {
      p = runPeer(dir, s.r, splits, core);
    }
    const engines = es.map(([dt, e]) => `engine ${dt} ${e.tokens_per_s.toFixed(1)} tokens/s (loss ${e.loss.toFixed(3)}, ×${(e.tokens_per_s / p.tokens_per_s).toFixed(2)})`).join(", ");
    console.log(`round ${round} (load ${before} -> ${load()}): ${engines}; pytorch ${p.tokens_per_s.toFixed(1)} tokens/s (loss ${p.loss.toFixed(3)} after ${p.steps_trained} steps; the engine's after ${steps + 1})`);
    for (const [dt, e] of es) if (!bestEngine.has(dt) || e.tokens_per_s > bestEngine.get(dt)!.tokens_per_s) bestEngine.set(dt, e);
    if (!bestPeer || p.tokens_per_s > bestPeer.tokens_per_s) bestPeer = p;
  }
  const p = bestPeer!;
  console.log(`best of ${rounds}: pytorch+OpenBLAS f32 ${p.tokens_per_s.toFixed(1)} tokens/s (core ${p.openblas_core}, ${p.split.blas_threads}×${p.split.torch_threads}), peak RSS ${gb(p.peak_rss_bytes)}, ${((fpt * p.tokens_per_s) / 1e9).toFixed(0)} GFLOP/s`);
  for (const [dt, e] of bestEngine) {
    const achieved = (fpt * e.tokens_per_s) / 1e9;
    console.log(`  engine ${dt.padEnd(4)} ${e.tokens_per_s.toFixed(1)} tokens/s -> engine/pytorch ${(e.tokens_per_s / p.tokens_per_s).toFixed(2)}; peak RSS ${gb(e.peak_rss_bytes)} (base weights ${gb(e.base_bytes)}, activations ${gb(e.activation_bytes)}) -> ${(e.peak_rss_bytes / p.peak_rss_bytes).toFixed(2)} of pytorch's; ${achieved.toFixed(0)} GFLOP/s = ${((100 * achieved) / cpu.fmaPeakGflops).toFixed(0)}% of the f32 FMA peak`);
  }
  rmSync(root, { recursive: true, force: true });
}
