// cuda/backend_cuda.h — the CUDA backend's table (backend.h) and what the GPU programs under
// dev/gpu/ need besides it. Declared without any CUDA header, so that backend.cpp (plain C++)
// includes it; defined in backend.cu, built only with LATHE_HAVE_CUDA (CMakeLists.txt).
#pragma once
#include <cstddef>

#include "backend.h"

// The CUDA backend's op table ("cuda"), or null when this process sees no CUDA device (the
// registry then leaves it out). Never throws. Its memory ops allocate on the current device.
const lathe_backend* lathe_backend_cuda();

namespace lathe {
namespace cuda {

// Bytes held now and at most through the table's alloc (activations, weights, LoRA state), and
// the most the device's memory pool has held at once (alloc + the backend's scratch buffers and
// cuBLASLt workspace), for the benchmark's peak-memory figure.
struct MemoryStats {
  size_t held = 0, peak = 0, pool_peak = 0;
};
MemoryStats memory_stats(lathe_backend_ctx* ctx);
// Attention on bf16 tensor cores (cuda/attention_tc.cu) for head dims 64 and 128 instead of the
// f32 kernels of cuda/attention.cu (the default until the GPU proof shows it within its
// tolerance). `ctx` must be a CUDA backend state.
void set_attention_tensor_cores(lathe_backend_ctx* ctx, bool on);
// Waits for everything queued on the backend's stream (timing: the ops return before the GPU is done).
void synchronize(lathe_backend_ctx* ctx);

}  // namespace cuda
}  // namespace lathe
