// cpu/embedding.cpp — see embedding.h. Token ids are validated by the caller.
#include "cpu/embedding.h"

#include <cstring>

#include "common.h"

namespace lathe {

void embedding_forward(ThreadPool& pool, float* x, const int32_t* tokens, const float* E, int N, int H) {
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n)
      std::memcpy(x + n * H, E + static_cast<int64_t>(tokens[n]) * H, sizeof(float) * H);
  });
}

}  // namespace lathe
