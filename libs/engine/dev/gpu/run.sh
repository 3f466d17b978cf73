#!/usr/bin/env bash
# dev/gpu/run.sh — the GPU proof of issue #20 in one run (about 9 minutes on one H100/H200): build
# the engine with the CUDA backend, run the op parity test and the engine tests (test_backends
# compares the "cuda" backend with the CPU one on the golden cases, LoRA and QLoRA, 3 AdamW
# steps), then the 8B-shaped benchmark (LoRA at 4096 tokens with the f32 and the tensor-core
# attention, QLoRA at 4096 and at 2048 tokens for its peak memory) and the transformers + PEFT peer on the same GPU. Needs nvcc, CMake, cuBLASLt and,
# for the peer, PyTorch + transformers + peft; no Node and no network.
#
#   OUT=/some/dir bash libs/engine/dev/gpu/run.sh     (from the repository root or anywhere)
#
# The golden model folders are written by Node (dev/golden-models.mjs) on the CPU machine: carry
# libs/engine/build/golden-models along, or set LATHE_GOLDEN_MODELS; without them test_backends
# skips its cases (and says so in backends.log).
# Writes under $OUT: nvidia-smi.txt, cmake.log, build.log, ops.log, engine_test.log, bench_*.json
# and .log (bench_<lora|qlora>_<tokens>_<f32|tc attention>), peft.json/.log and summary.json (every step's exit code; a step that fails does not
# stop the others).
set -uo pipefail
ENGINE="$(cd "$(dirname "$0")/../.." && pwd)"
REPO="$(cd "$ENGINE/../.." && pwd)"
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
BUILD="${LATHE_GPU_BUILD:-$ENGINE/build-gpu}"
declare -A RC

step() {  # step NAME TIMEOUT_S CMD... : stdout+stderr to $OUT/NAME.log, exit code recorded
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  RC[$name]=$?
  echo "[$name] exit ${RC[$name]} in $((SECONDS - t0)) s"
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
# dense bf16 peak: H100 SXM and H200 989 TFLOP/s; H100 PCIe 756
PEAK=989
case "$GPU" in *PCIe*) PEAK=756 ;; esac
echo "GPU: $GPU (dense bf16 peak taken as $PEAK TFLOP/s)"

step cmake 120 cmake -S "$ENGINE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${LATHE_CUDA_ARCH:-90}"
step build 240 cmake --build "$BUILD" -j"$(nproc)" --target lathe_engine_test lathe_cuda_ops_test lathe_cuda_bench
step ops 120 "$BUILD/lathe_cuda_ops_test"
step engine_test 180 "$BUILD/lathe_engine_test"
# attention f32 (the default kernels) and tc (tensor cores, attention_tc.cu)
for cfg in "lora 4096 f32" "lora 4096 tc" "qlora 4096 tc" "qlora 2048 tc"; do
  set -- $cfg
  step "bench_$1_$2_$3" 120 "$BUILD/lathe_cuda_bench" "$1" "$2" 3 "$PEAK" "$3"
  grep '^{' "$OUT/bench_$1_$2_$3.log" >"$OUT/bench_$1_$2_$3.json" || true
done
if [ -n "${LATHE_SKIP_PEFT:-}" ]; then
  echo "[peft] skipped (LATHE_SKIP_PEFT)"
else
  step peft 200 python3 "$REPO/bench/engine/peft_step.py" --seq 4096 --steps 3 --peak-tflops "$PEAK"
  grep '^{' "$OUT/peft.log" >"$OUT/peft.json" || true
fi

# summary: exit codes, the JSON lines, the ratios the issue asks for
{
  echo "{\"gpu\": \"$GPU\", \"peak_tflops\": $PEAK, \"exit_codes\": {"
  first=1
  for k in "${!RC[@]}"; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '"%s": %s' "$k" "${RC[$k]}"
  done
  echo "}}"
} >"$OUT/exit_codes.json"
python3 - "$OUT" <<'PY' || true
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            line = f.read().strip().splitlines()
            return json.loads(line[-1]) if line else None
    except Exception:
        return None
s = json.load(open(os.path.join(out, "exit_codes.json")))
lora_f32, lora_tc = load("bench_lora_4096_f32.json"), load("bench_lora_4096_tc.json")
qlora, qlora2k, peer = load("bench_qlora_4096_tc.json"), load("bench_qlora_2048_tc.json"), load("peft.json")
s.update({"lora_4096_f32_attention": lora_f32, "lora_4096_tc_attention": lora_tc, "qlora_4096": qlora, "qlora_2048": qlora2k, "peft_4096": peer})
# goals from the tensor-core runs (the same attention as the QLoRA runs); the f32 run is kept for reference
lora = lora_tc
goals = {}
if lora and peer:
    goals["speedup_vs_peft"] = round(lora["tokens_per_s"] / peer["tokens_per_s"], 3)
    goals["memory_vs_peft"] = round(lora["peak_bytes"] / peer["peak_bytes"], 3)
if lora:
    goals["mfu"] = lora["mfu"]
if lora and qlora:
    goals["qlora_slowdown"] = round(1 - qlora["tokens_per_s"] / lora["tokens_per_s"], 3)
if qlora2k:
    goals["qlora_2048_peak_gb"] = round(qlora2k["peak_bytes"] / 1e9, 3)
s["goals"] = goals
s["goal_targets"] = {"speedup_vs_peft": ">= 2", "mfu": ">= 0.40", "qlora_slowdown": "<= 0.15", "qlora_2048_peak_gb": "<= 8"}
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(json.dumps(s, indent=1))
PY
