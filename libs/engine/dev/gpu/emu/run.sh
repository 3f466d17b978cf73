#!/usr/bin/env bash
# dev/gpu/emu/run.sh — the CUDA attention (f32 and tensor-core) and cross-entropy kernels run on
# the CPU under a small emulator (emu.h: each block's threads are coroutines; __syncthreads, warp
# barriers, shuffles and WMMA fragments are collective; blocks run one after another; shared
# memory starts as garbage) against a naive f64 reference (harness.cpp): GQA, partial tiles,
# head dims 32-128, no / contiguous (lo/hi tile skipping) / scattered segments. A review aid for a
# machine without a GPU (no nvcc needed, only the CUDA headers for cuda_bf16.h): it checks the
# kernels' indexing, masking, tile skipping and barrier matching, not the GPU's memory model,
# timing or libm. Not part of the build or CI. About a minute on 2 cores.
#   bash libs/engine/dev/gpu/emu/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../../../src" && pwd)"
WORK="${EMU_WORK:-/tmp/lathe-cuda-emu}"
CUDA_INC="${CUDA_INC:-/usr/local/cuda/include}"
mkdir -p "$WORK/cuda"
cp "$HERE/cuda/common.cuh" "$WORK/cuda/common.cuh"
python3 "$HERE/transform.py" "$SRC/cuda" "$WORK/cuda" attention attention_tc cross_entropy
g++ -std=c++17 -O1 -I"$HERE" -I"$WORK" -I"$SRC" -I"$SRC/../include" -I"$CUDA_INC" "$HERE/harness.cpp" "$WORK"/cuda/attention.cpp \
  "$WORK"/cuda/attention_tc.cpp "$WORK"/cuda/cross_entropy.cpp -o "$WORK/harness"
"$WORK/harness"
