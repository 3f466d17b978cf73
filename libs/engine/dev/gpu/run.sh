#!/usr/bin/env bash
# dev/gpu/run.sh — the GPU proof of issue #20 in one run on one H100/H200: build the engine with
# the CUDA backend, run the op parity test and the backend tests (test_backends compares the
# "cuda" backend with the CPU one on the golden cases, LoRA and QLoRA, 3 AdamW steps), then the
# 8B-shaped benchmark (LoRA at 4096 tokens with the tensor-core attention, the transformers + PEFT
# peer on the same GPU, QLoRA at 4096 and at 2048 tokens for its peak memory, and LoRA with the
# f32 attention last, for reference). Needs nvcc, CMake, cuBLASLt (the toolkit's, else the one
# PyTorch's nvidia-cublas wheel carries) and, for the peer, PyTorch + transformers + peft; no Node
# and no network.
#
#   OUT=/some/dir bash libs/engine/dev/gpu/run.sh     (from the repository root or anywhere)
#
# Time: the whole run is held to LATHE_GPU_BUDGET_S seconds (default 420) from its start: each
# step's timeout is cut to what is left (keeping 20 s for the summary), a step that no longer
# fits is skipped (exit code "skipped"), and summary.json is rewritten after every step, so a run
# stopped from outside still leaves one. Give the device command a limit of the budget + 30 s.
#
# The golden model folders are written by Node (dev/golden-models.mjs) on the CPU machine: carry
# libs/engine/build/golden-models along, or set LATHE_GOLDEN_MODELS; without them test_backends
# skips its cases (and says so in engine_test.log).
#
# Output: the device tool brings back at most 8 files from $OUT, so the step logs are written to
# $WORK (default /tmp/lathe-gpu-work) and gathered into $OUT after every step:
#   summary.json  exit codes and seconds per step, every JSON line of the benchmarks, the goals;
#   ops.log       lathe_cuda_ops_test;   engine_test.log  the backend tests;
#   logs.txt      everything else (toolchain, nvidia-smi, cmake, build, benchmarks, peer), each
#                 log cut to its last 64 KB.
set -uo pipefail
ENGINE="$(cd "$(dirname "$0")/../.." && pwd)"
REPO="$(cd "$ENGINE/../.." && pwd)"
OUT="${OUT:-$PWD/gpu-out}"
WORK="${LATHE_GPU_WORK:-/tmp/lathe-gpu-work}"
BUDGET="${LATHE_GPU_BUDGET_S:-420}"
rm -rf "$WORK"  # no log of an earlier run on a warm machine may stand in for a skipped step
mkdir -p "$OUT" "$WORK"
BUILD="${LATHE_GPU_BUILD:-$ENGINE/build-gpu}"
declare -A RC SECS
ORDER=()
export PYTHONUNBUFFERED=1

gather() {  # the step logs and the summary into $OUT (at most 8 files come back)
  for f in ops engine_test; do [ -f "$WORK/$f.log" ] && tail -c 4000000 "$WORK/$f.log" >"$OUT/$f.log"; done
  {
    for f in toolchain nvidia-smi cmake build bench_lora_4096_tc peft bench_qlora_4096_tc bench_qlora_2048_tc bench_lora_4096_f32; do
      [ -f "$WORK/$f.log" ] || continue
      echo "===== $f.log (last 64 KB)"
      tail -c 65536 "$WORK/$f.log"
      echo
    done
  } >"$OUT/logs.txt"
  {
    echo "{\"gpu\": \"${GPU:-}\", \"peak_tflops\": ${PEAK:-0}, \"budget_s\": $BUDGET, \"elapsed_s\": $SECONDS, \"cublaslt\": \"${CUBLASLT_FROM:-}\","
    echo " \"exit_codes\": {"
    local first=1 k
    for k in ${ORDER[@]+"${ORDER[@]}"}; do
      [ $first -eq 1 ] || echo ","
      first=0
      printf '"%s": "%s"' "$k" "${RC[$k]}"
    done
    echo "}, \"seconds\": {"
    first=1
    for k in ${ORDER[@]+"${ORDER[@]}"}; do
      [ $first -eq 1 ] || echo ","
      first=0
      printf '"%s": %s' "$k" "${SECS[$k]}"
    done
    echo "}}"
  } >"$WORK/exit_codes.json"
  python3 - "$WORK" "$OUT" <<'PY' || cp "$WORK/exit_codes.json" "$OUT/summary.json"
import json, os, sys
work, out = sys.argv[1], sys.argv[2]
def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("{")]
            return json.loads(lines[-1]) if lines else None
    except Exception:
        return None
s = json.load(open(os.path.join(work, "exit_codes.json")))
lora_f32, lora_tc = load("bench_lora_4096_f32.log"), load("bench_lora_4096_tc.log")
qlora, qlora2k, peer = load("bench_qlora_4096_tc.log"), load("bench_qlora_2048_tc.log"), load("peft.log")
s.update({"lora_4096_tc_attention": lora_tc, "peft_4096": peer, "qlora_4096": qlora, "qlora_2048": qlora2k, "lora_4096_f32_attention": lora_f32})
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
# the parity verdicts in one place: the last line of each test log
for name in ("ops", "engine_test"):
    try:
        with open(os.path.join(work, name + ".log")) as f:
            tail = [l for l in f.read().splitlines() if l.strip()]
        s[name + "_last_line"] = tail[-1] if tail else ""
        s[name + "_failures"] = [l.strip() for l in tail if l.startswith("FAIL") or "[ FAIL ]" in l or "FAILED" in l or "SKIP" in l][:40]
    except Exception:
        pass
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=1)
PY
}

step() {  # step NAME TIMEOUT_S CMD... : stdout+stderr to $WORK/NAME.log, exit code and seconds recorded
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS - 20))
  ORDER+=("$name")
  if [ "$left" -lt 15 ]; then
    RC[$name]=skipped
    SECS[$name]=0
    echo "[$name] skipped: ${left} s of the ${BUDGET} s budget left"
    gather
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  RC[$name]=$?
  SECS[$name]=$((SECONDS - t0))
  echo "[$name] exit ${RC[$name]} in ${SECS[$name]} s (limit $limit s)"
  gather
}

nvidia-smi >"$WORK/nvidia-smi.txt" 2>&1
cp "$WORK/nvidia-smi.txt" "$WORK/nvidia-smi.log"
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
# dense bf16 peak: H100 SXM and H200 989 TFLOP/s; H100 PCIe 756
PEAK=989
case "$GPU" in *PCIe*) PEAK=756 ;; esac
echo "GPU: $GPU (dense bf16 peak taken as $PEAK TFLOP/s)"

# ---- toolchain: nvcc on the PATH, and cuBLASLt from the toolkit or else from the nvidia-cublas
# wheel beside PyTorch (header and library handed to CMake's FindCUDAToolkit by hand)
command -v nvcc >/dev/null 2>&1 || export PATH="$PATH:/usr/local/cuda/bin"
CMAKE_EXTRA=()
CUBLASLT_FROM=toolkit
{
  echo "nvcc: $(command -v nvcc)"; nvcc --version 2>&1 | tail -n 2
  echo "cmake: $(command -v cmake) $(cmake --version 2>&1 | head -n1)"
  echo "python3: $(command -v python3)"
} >"$WORK/toolchain.log" 2>&1
CUDA_ROOT="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)" 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")"
first_of() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; }
LT_LIB="$(first_of "$CUDA_ROOT"/lib64/libcublasLt.so "$CUDA_ROOT"/targets/*/lib/libcublasLt.so)"
LT_INC="$(first_of "$CUDA_ROOT"/include/cublasLt.h "$CUDA_ROOT"/targets/*/include/cublasLt.h)"
if [ -z "$LT_LIB" ] || [ -z "$LT_INC" ]; then
  # a versioned library only (no -dev link), or none in the toolkit: the wheel's beside PyTorch
  LT_LIB="${LT_LIB:-$(first_of "$CUDA_ROOT"/lib64/libcublasLt.so.* "$CUDA_ROOT"/targets/*/lib/libcublasLt.so.*)}"
  for sp in $(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null); do
    [ -d "$sp/nvidia" ] || continue
    [ -n "$LT_LIB" ] || LT_LIB="$(find "$sp/nvidia" -name 'libcublasLt.so*' 2>/dev/null | sort | head -n1)"
    [ -n "$LT_INC" ] || LT_INC="$(find "$sp/nvidia" -name cublasLt.h 2>/dev/null | head -n1)"
  done
  CUBLASLT_FROM="library ${LT_LIB:-none}, header ${LT_INC:-none}"
  if [ -n "$LT_LIB" ] && [ -n "$LT_INC" ]; then
    CMAKE_EXTRA=(-DCUDA_cublasLt_LIBRARY="$LT_LIB" -DCMAKE_CUDA_FLAGS="-I$(dirname "$LT_INC")")
    export LD_LIBRARY_PATH="$(dirname "$LT_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
echo "cuBLASLt: $CUBLASLT_FROM" | tee -a "$WORK/toolchain.log"

# -DCMAKE_CUDA_ARCHITECTURES explicitly (CMakeLists.txt defaults to 90 and gives it to the
# backend's target; LATHE_CUDA_ARCH overrides it, e.g. 90a or "80;90")
step cmake 90 cmake -S "$ENGINE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLATHE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${LATHE_CUDA_ARCH:-90}" ${CMAKE_EXTRA[@]+"${CMAKE_EXTRA[@]}"}
step build 240 cmake --build "$BUILD" -j"$(nproc)" --target lathe_engine_test lathe_cuda_ops_test lathe_cuda_bench
step ops 90 "$BUILD/lathe_cuda_ops_test"
# the backend tests only (test_backends: "cuda" against "cpu" on the golden cases; the registry;
# test_backend_memory): the rest of lathe_engine_test is CPU-only and runs in CI
step engine_test 150 "$BUILD/lathe_engine_test" backend
# benchmarks, most needed first: attention tc (tensor cores, attention_tc.cu) or f32 (attention.cu)
bench() { step "bench_$1_$2_$3" 120 "$BUILD/lathe_cuda_bench" "$1" "$2" 3 "$PEAK" "$3"; }
bench lora 4096 tc
if [ -n "${LATHE_SKIP_PEFT:-}" ]; then
  echo "[peft] skipped (LATHE_SKIP_PEFT)"
else
  step peft 200 python3 "$REPO/bench/engine/peft_step.py" --seq 4096 --steps 3 --peak-tflops "$PEAK"
fi
bench qlora 4096 tc
bench qlora 2048 tc
bench lora 4096 f32
gather
cat "$OUT/summary.json"
