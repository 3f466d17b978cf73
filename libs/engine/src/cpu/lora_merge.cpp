// cpu/lora_merge.cpp — see lora_merge.h. Compiled with -ffp-contract=off (CMakeLists.txt): a fused
// w + scale·s would round once where mergeAdapter rounds twice (the products s·a are exact in
// f64, so contraction changes nothing in the sums, only in that last step).
#include "cpu/lora_merge.h"

#include <algorithm>
#include <vector>

#include "common.h"

namespace lathe {

namespace {
// Columns per tile: the f64 row sums (4 KiB) stay in L1 and A's r x 512 slice in L2 while a
// task walks its rows.
constexpr int64_t kCols = 512;
}  // namespace

void lora_merge(ThreadPool& pool, float* w, const float* a, const float* b, int64_t rows, int64_t cols, int r, double scale) {
  parallel_rows(pool, rows, [&](int64_t begin, int64_t end, int) {
    std::vector<double> sum(static_cast<size_t>(std::min(cols, kCols)));
    for (int64_t c0 = 0; c0 < cols; c0 += kCols) {
      const int64_t n = std::min(kCols, cols - c0);
      for (int64_t o = begin; o < end; ++o) {
        std::fill(sum.begin(), sum.begin() + n, 0.0);
        const float* bo = b + o * r;
        for (int k = 0; k < r; ++k) {
          const double s = bo[k];
          if (s == 0.0) continue;
          const float* ak = a + static_cast<int64_t>(k) * cols + c0;
          for (int64_t i = 0; i < n; ++i) sum[i] += s * static_cast<double>(ak[i]);
        }
        float* wo = w + o * cols + c0;
        for (int64_t i = 0; i < n; ++i) wo[i] = static_cast<float>(static_cast<double>(wo[i]) + scale * sum[i]);
      }
    }
  });
}

}  // namespace lathe
