// cpu/lora_merge.h — folding a LoRA adapter into its base weight, as PEFT's merge_and_unload does:
//
//   W' = W + scale · B·A      W [rows, cols] (out_features x in_features, f32, updated in place),
//                             A [r, cols], B [rows, r]; scale = alpha/r, or alpha/sqrt(r) (rsLoRA).
//
// Each element of B·A is summed in f64 over k ascending (terms whose B value is zero skipped),
// added to W in f64 and rounded to f32 once: the arithmetic of @lathe/models' mergeAdapter, so a
// model merged here is bit-identical to one merged there. (sgemm with beta 1 would sum in f32
// and round twice, about an ulp away in places; the f64 sums cost little, since with r << cols
// the merge is bound by reading and writing W.) One thread computes each row, so the result
// does not depend on the number of threads.
#pragma once
#include <cstdint>

namespace lathe {

class ThreadPool;

void lora_merge(ThreadPool& pool, float* w, const float* a, const float* b, int64_t rows, int64_t cols, int r, double scale);

}  // namespace lathe
