// cpu/cross_entropy.h — the loss of one chunk of LM-head logits, and its gradient in place:
//   loss_sum += sum over rows i with labels[i] != -100 of logsumexp(logits[i]) - logits[i, labels[i]]
//   backward: logits[i, :] = coef * (softmax(logits[i]) - onehot(labels[i]))   (0 for unlabelled rows)
// logits: [rows, V] f32; labels: [rows]. The log-sum-exp runs in f64 over the row maximum; each
// row's loss is a double and they are added to *loss_sum one by one in row order, so the sum
// does not depend on the threads. With `correct` (host, may be null), adds the number of labelled
// rows whose first maximal logit is at their label (argmax as torch.argmax takes it): the rows
// a greedy decoder would get right, for mean token accuracy. The chunking and the head GEMMs around it: cross_entropy.h.
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void cross_entropy_rows(ThreadPool& pool, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward,
                        double* loss_sum, int64_t* correct);
}  // namespace lathe
