// test_kernels.cpp — the shared kernel bodies (src/kernels/, compiled for the CPU here and for the
// GPU in src/cuda/) as the CPU ops use them:
// - each CPU op gives the same bits as the scalar formula it was written with before the bodies
//   were shared (the formulas below are those loops, kept verbatim), on random data over several
//   thread counts, so sharing the bodies changed nothing on the CPU; SwiGLU and the cross-entropy
//   since compute their exponentials with kernels/exp.h (vectorised, not libm): they are held to
//   libm's formulas within its error, and to the same bits for every thread count;
// - the argmax pieces a GPU reduction needs: combining partial (value, index) results from any
//   split of a row, in any order, gives torch.argmax's first maximum, as the CPU's scan does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/adamw.h"
#include "cpu/cross_entropy.h"
#include "cpu/dropout.h"
#include "cpu/rmsnorm.h"
#include "cpu/rope.h"
#include "cpu/swiglu.h"
#include "kernels/cross_entropy.h"
#include "kernels/exp.h"
#include "test_util.h"
#include "threads.h"

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

double max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  double m = a.size() == b.size() ? 0.0 : 1e30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}
// max |a - b| over max |b|
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0.0;
  for (float v : b) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  return max_abs(a, b) / (scale > 0 ? scale : 1.0);
}

// The dot product cpu/vec.h computes (8 partial sums), for the RMSNorm formula below.
float dot8(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST(exp_neg_is_libm_exp_within_its_stated_error_and_zero_below_minus_87) {
  double worst = 0.0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 200000.0f;
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(lathe::kern::exp_neg(x) - want) / want);
  }
  CHECK(worst <= 3e-7);
  CHECK(lathe::kern::exp_neg(0.0f) == 1.0f && lathe::kern::exp_neg(-88.0f) == 0.0f && lathe::kern::exp_neg(-INFINITY) == 0.0f);
}

TEST(the_cpu_ops_on_the_shared_kernel_bodies_give_the_bits_of_their_former_scalar_formulas) {
  lathe::Rng rng(7, 3);
  lathe::ThreadPool one(1);
  for (int threads : {1, 3}) {
    lathe::ThreadPool pool(threads);
    const int N = 37, H = 100, heads = 3, d = 16, half = d / 2;
    // RMSNorm forward and backward (written and accumulated)
    auto x = t::random_vec(rng, N * H, -2, 2), w = t::random_vec(rng, H, 0.5f, 1.5f), dy = t::random_vec(rng, N * H, -1, 1);
    std::vector<float> y(N * H), rstd(N), want_y(N * H), want_rstd(N);
    lathe::rmsnorm_forward(pool, y.data(), rstd.data(), x.data(), w.data(), N, H, 1e-5f);
    for (int n = 0; n < N; ++n) {
      const float* xr = &x[n * H];
      const float ms = dot8(xr, xr, H) / static_cast<float>(H);
      const float r = 1.0f / std::sqrt(ms + 1e-5f);
      want_rstd[n] = r;
      for (int i = 0; i < H; ++i) want_y[n * H + i] = w[i] * (xr[i] * r);
    }
    CHECK(same_bits(y, want_y) && same_bits(rstd, want_rstd));
    for (bool acc : {false, true}) {
      auto dx = t::random_vec(rng, N * H, -1, 1), want = dx;
      lathe::rmsnorm_backward(pool, dx.data(), acc, dy.data(), x.data(), w.data(), rstd.data(), N, H);
      for (int n = 0; n < N; ++n) {
        const float r = rstd[n];
        float s = 0.0f;
        for (int i = 0; i < H; ++i) s += w[i] * dy[n * H + i] * x[n * H + i];
        const float c = s * r * r * r / static_cast<float>(H);
        for (int i = 0; i < H; ++i) {
          const float v = r * w[i] * dy[n * H + i] - x[n * H + i] * c;
          want[n * H + i] = acc ? want[n * H + i] + v : v;
        }
      }
      CHECK(same_bits(dx, want));
    }
    // RoPE forward and backward
    std::vector<int32_t> pos(N);
    for (int n = 0; n < N; ++n) pos[n] = static_cast<int32_t>(rng.next() % 5000);
    auto inv = t::random_vec(rng, half, 0.0001f, 1.0f);
    for (float sign : {1.0f, -1.0f}) {
      auto q = t::random_vec(rng, N * heads * d, -1, 1), want = q;
      if (sign > 0) lathe::rope_forward(pool, q.data(), pos.data(), inv.data(), N, heads, d);
      else lathe::rope_backward(pool, q.data(), pos.data(), inv.data(), N, heads, d);
      for (int n = 0; n < N; ++n)
        for (int h = 0; h < heads; ++h)
          for (int i = 0; i < half; ++i) {
            const float a = static_cast<float>(pos[n]) * inv[i], cs = std::cos(a), sn = sign * std::sin(a);
            float* v = &want[(n * heads + h) * d];
            const float x0 = v[i], x1 = v[i + half];
            v[i] = x0 * cs - x1 * sn;
            v[i + half] = x1 * cs + x0 * sn;
          }
      CHECK(same_bits(q, want));
    }
    // SwiGLU forward and backward (du aliasing da, as the model calls it)
    const int64_t n = 1001;
    auto g = t::random_vec(rng, n, -8, 8), u = t::random_vec(rng, n, -2, 2), da = t::random_vec(rng, n, -1, 1);
    std::vector<float> a(n), want_a(n), dg(n), want_dg(n), want_du(n);
    const std::vector<float> da0 = da;
    lathe::swiglu_forward(pool, a.data(), g.data(), u.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-g[i]));
      want_a[i] = g[i] * s * u[i];
      want_dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
      want_du[i] = da[i] * (g[i] * s);
    }
    lathe::swiglu_backward(pool, dg.data(), da.data(), da.data(), g.data(), u.data(), n);
    CHECK(max_rel(a, want_a) <= 1e-6 && max_rel(dg, want_dg) <= 1e-6 && max_rel(da, want_du) <= 1e-6);
    {  // the same bits on one thread (the ranges split differently: vector and scalar tails agree)
      std::vector<float> a1(n), dg1(n), da1 = da0;
      lathe::swiglu_forward(one, a1.data(), g.data(), u.data(), n);
      lathe::swiglu_backward(one, dg1.data(), da1.data(), da1.data(), g.data(), u.data(), n);
      CHECK(same_bits(a, a1) && same_bits(dg, dg1) && same_bits(da, da1));
    }
    // cross-entropy rows: loss, correct count, gradient in place (one unlabelled row)
    const int rows = 9, V = 333;
    auto logits = t::random_vec(rng, rows * V, -6, 6), want_l = logits;
    std::vector<int32_t> labels(rows);
    for (int i = 0; i < rows; ++i) labels[i] = i == 4 ? -100 : static_cast<int32_t>(rng.next() % V);
    logits[2 * V + 17] = logits[2 * V + 200] = 50.0f;  // a tie for the first maximum
    want_l = logits;
    labels[2] = 17;
    double loss = 0.25, want_loss = 0.25;
    int64_t correct = 2, want_correct = 2;
    std::vector<float> logits0 = logits;
    lathe::cross_entropy_rows(pool, logits.data(), labels.data(), rows, V, 0.125f, true, &loss, &correct);
    for (int i = 0; i < rows; ++i) {
      float* lr = &want_l[i * V];
      if (labels[i] == -100) {
        std::fill(lr, lr + V, 0.0f);
        continue;
      }
      float mx = lr[0];
      int arg = 0;
      for (int j = 1; j < V; ++j)
        if (lr[j] > mx) mx = lr[j], arg = j;
      want_correct += arg == labels[i];
      double sum = 0.0;
      for (int j = 0; j < V; ++j) sum += std::exp(static_cast<double>(lr[j] - mx));
      const double lse = static_cast<double>(mx) + std::log(sum);
      want_loss += lse - static_cast<double>(lr[labels[i]]);
      for (int j = 0; j < V; ++j) lr[j] = 0.125f * static_cast<float>(std::exp(static_cast<double>(lr[j]) - lse));
      lr[labels[i]] -= 0.125f;
    }
    // each gradient is 0.125 * softmax: f32 exponentials of l - float(lse) (|lse| <= 56 here)
    CHECK(max_abs(logits, want_l) <= 0.125 * 1e-5 && std::fabs(loss - want_loss) <= 1e-6 * std::fabs(want_loss) && correct == want_correct);
    {
      double loss1 = 0.25;
      int64_t correct1 = 2;
      lathe::cross_entropy_rows(one, logits0.data(), labels.data(), rows, V, 0.125f, true, &loss1, &correct1);
      CHECK(same_bits(logits, logits0) && loss == loss1 && correct == correct1);
    }
  }
  // AdamW, two steps (bias corrections of t = 1 and 2, weight decay), and the f64 sum of squares
  lathe::Rng r2(3, 9);
  const int64_t n = 517;
  auto p = t::random_vec(r2, n, -1, 1), gr = t::random_vec(r2, n, -1e-2f, 1e-2f);
  std::vector<float> m(n, 0.0f), v(n, 0.0f), wp = p, wm = m, wv = v;
  for (int64_t step = 1; step <= 2; ++step) {
    lathe::adamw_update(p.data(), gr.data(), m.data(), v.data(), n, step, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    const double bc1 = 1.0 - std::pow(static_cast<double>(0.9f), static_cast<double>(step)), bc2 = 1.0 - std::pow(static_cast<double>(0.999f), static_cast<double>(step));
    const float step_size = static_cast<float>(1e-3f / bc1), bc2_sqrt = static_cast<float>(std::sqrt(bc2)), decay = 1.0f - 1e-3f * 0.01f;
    for (int64_t i = 0; i < n; ++i) {
      wp[i] *= decay;
      wm[i] = 0.9f * wm[i] + (1.0f - 0.9f) * gr[i];
      wv[i] = 0.999f * wv[i] + (1.0f - 0.999f) * gr[i] * gr[i];
      wp[i] -= step_size * wm[i] / (std::sqrt(wv[i]) / bc2_sqrt + 1e-8f);
    }
  }
  CHECK(same_bits(p, wp) && same_bits(m, wm) && same_bits(v, wv));
  double ss = 0.0;
  for (float x : gr) ss += static_cast<double>(x) * x;
  CHECK(lathe::grad_sumsq(gr.data(), n) == ss);
  // LoRA dropout
  std::vector<uint8_t> mask(n);
  for (auto& b : mask) b = r2.uniform() >= 0.3f;
  std::vector<float> out(n), dxv = gr, want_out(n), want_dx = gr;
  lathe::dropout_forward(out.data(), p.data(), mask.data(), 1.0f / 0.7f, n);
  lathe::dropout_backward(dxv.data(), p.data(), mask.data(), 1.0f / 0.7f, n);
  for (int64_t i = 0; i < n; ++i) {
    want_out[i] = mask[i] ? p[i] * (1.0f / 0.7f) : 0.0f;
    if (mask[i]) want_dx[i] += p[i] * (1.0f / 0.7f);
  }
  CHECK(same_bits(out, want_out) && same_bits(dxv, want_dx));
}

TEST(combining_partial_argmaxes_in_any_split_and_order_gives_the_first_maximum_as_the_scan_does) {
  lathe::Rng rng(5, 5);
  for (int trial = 0; trial < 200; ++trial) {
    const int V = 1 + static_cast<int>(rng.next() % 300);
    std::vector<float> row(V);
    for (auto& x : row) x = static_cast<float>(static_cast<int>(rng.next() % 7));  // many ties
    float smx = row[0];
    int sarg = 0;
    for (int j = 1; j < V; ++j) lathe::kern::ce_argmax_scan(smx, sarg, row[j], j);
    int first = 0;
    for (int j = 1; j < V; ++j)
      if (row[j] > row[first]) first = j;
    CHECK(sarg == first && smx == row[first]);
    // strided partial scans (as GPU threads do), combined in a scrambled order
    const int parts = 1 + static_cast<int>(rng.next() % 40);
    std::vector<float> pm(parts, -INFINITY);
    std::vector<int> pa(parts, V);
    for (int p = 0; p < parts; ++p)
      for (int j = p; j < V; j += parts) {
        if (pa[p] == V) pm[p] = row[j], pa[p] = j;
        else lathe::kern::ce_argmax_scan(pm[p], pa[p], row[j], j);
      }
    float mx = -INFINITY;
    int arg = V;
    std::vector<int> order(parts);
    for (int k = 0; k < parts; ++k) order[k] = k;
    for (int k = parts - 1; k > 0; --k) std::swap(order[k], order[rng.next() % (k + 1)]);
    for (int p : order)
      if (pa[p] < V) lathe::kern::ce_argmax_combine(mx, arg, pm[p], pa[p]);
    CHECK(arg == first && mx == row[first]);
  }
}
