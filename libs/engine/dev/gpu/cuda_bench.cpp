// dev/gpu/cuda_bench.cpp — training throughput and peak memory of the CUDA backend on a
// Llama-3.1-8B-shaped model with random weights (no download): 32 layers, hidden 4096, 32 query /
// 8 kv heads of 128, intermediate 14336, vocabulary 128256, LoRA r 16 (alpha 32) on all 7
// projections, one packed row of T tokens, gradient checkpointing (each layer's input kept, the
// layer recomputed before its backward), AdamW with clipping.
//
//   lathe_cuda_bench [lora|qlora] [T=4096] [steps=3] [peak_tflops=989] [attention=f32|tc] [layers=32] [ce_rows=1024, qlora 256]
//
// attention: the f32 kernels (cuda/attention.cu, the default) or the tensor-core ones
// (cuda/attention_tc.cu).
// lora: the frozen layer linears in bf16; qlora: in NF4 (random codes and scales). The head is
// bf16 in both (as PEFT's bf16 model has it); the embedding rows are looked up on the host and
// uploaded (the table stays in host memory). The step is composed here from the backend ops and
// the engine's own linear_forward/linear_backward (linear.h), in model.cpp's order: the model's
// loader takes f32 host weights, which an 8B model does not fit through in the time of the proof.
// Prints one JSON line: tokens/s, seconds per step, the memory pool's peak, model FLOPs
// utilisation at 4 N FLOPs per token (N = every parameter), and the last loss.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "bf16.h"
#include "common.h"
#include "cuda/backend_cuda.h"
#include "linear.h"
#include "nf4.h"
#include "rng.h"

namespace {

using lathe::Backend;
using lathe::Buffer;

struct Acts {
  Buffer<float> h1, rstd1, q, k, v, att, lse, x_mid, h2, rstd2, g, u, a;
};

struct Layer {
  lathe::Linear lin[7];  // q k v o gate up down
  Buffer<uint16_t> w16[7];
  lathe::nf4::Tensor4 w4[7];
  lathe::LoRA lora[7];
  Buffer<float> ln1, ln2, x_in;
};

// xorshift fill, fast enough for gigabytes
struct Fill {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "lora";
  const int T = argc > 2 ? std::atoi(argv[2]) : 4096;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 3;
  const double peak_tflops = argc > 4 ? std::atof(argv[4]) : 989.0;
  const std::string attn = argc > 5 ? argv[5] : "f32";
  const int L = argc > 6 ? std::atoi(argv[6]) : 32;
  const bool qlora = mode == "qlora";
  const int CR = argc > 7 ? std::atoi(argv[7]) : qlora ? 256 : 1024;  // logits rows per chunk (f32 [CR, V])
  const int H = 4096, I = 14336, nh = 32, nkv = 8, d = 128, V = 128256, r = 16, N = T;
  const int qd = nh * d, kd = nkv * d;
  const lathe_backend* cuda = lathe_backend_cuda();
  if (!cuda) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  try {
    Backend be;
    be.reset(cuda, nullptr);
    lathe::cuda::set_attention_tensor_cores(be.ctx, attn == "tc");
    const lathe_backend& op = *be.ops;
    Fill fill;
    // ---- weights: one random block of bf16 values uploaded into every weight at a shifted offset
    const int64_t ins[7] = {H, H, H, qd, H, H, I}, outs[7] = {qd, kd, kd, H, I, I, H};
    std::vector<uint16_t> pool16(int64_t{1} << 26);
    for (auto& x : pool16) x = lathe::f32_to_bf16(fill.uniform(-0.02f, 0.02f));
    auto upload16 = [&](Buffer<uint16_t>& b, int64_t n) {
      b.resize(be, static_cast<size_t>(n));
      for (int64_t o = 0; o < n; o += static_cast<int64_t>(pool16.size())) {
        const int64_t m = std::min<int64_t>(n - o, static_cast<int64_t>(pool16.size()));
        op.upload(be.ctx, b.data() + o, pool16.data(), sizeof(uint16_t) * m);
      }
    };
    std::vector<uint8_t> codes;
    std::vector<float> ones(std::max(H, I), 1.0f);
    std::vector<Layer> layers(L);
    int64_t params = 2 * int64_t{V} * H + H;
    for (int l = 0; l < L; ++l) {
      Layer& Ly = layers[l];
      Ly.ln1.assign(be, ones.data(), H);
      Ly.ln2.assign(be, ones.data(), H);
      params += 2 * H;
      for (int k = 0; k < 7; ++k) {
        lathe::Linear& lin = Ly.lin[k];
        lin.in = static_cast<int>(ins[k]);
        lin.out = static_cast<int>(outs[k]);
        const int64_t n = ins[k] * outs[k];
        params += n;
        if (qlora) {
          lathe::nf4::Tensor4& t = Ly.w4[k];
          t.rows = outs[k];
          t.cols = ins[k];
          codes.resize(static_cast<size_t>((n + 1) / 2));
          for (auto& c : codes) c = static_cast<uint8_t>(fill.next());
          t.codes.assign(be, codes.data(), codes.size());
          const int64_t blocks = (n + 63) / 64;
          codes.resize(static_cast<size_t>(blocks));
          for (auto& c : codes) c = static_cast<uint8_t>(128 + fill.next() % 100);
          t.absmax_q.assign(be, codes.data(), codes.size());
          std::vector<float> sc(static_cast<size_t>((blocks + 255) / 256));
          for (auto& s : sc) s = fill.uniform(0.01f, 0.03f);
          t.absmax_scale.assign(be, sc.data(), sc.size());
          t.offset = 0.02f;
          lin.W4 = &t;
        } else {
          upload16(Ly.w16[k], n);
          lin.W16 = Ly.w16[k].data();
        }
        lathe::LoRA& lo = Ly.lora[k];
        lo.r = r;
        lo.in = lin.in;
        lo.out = lin.out;
        lo.scale = 2.0f;
        std::vector<float> a(static_cast<size_t>(r) * lin.in), b(static_cast<size_t>(lin.out) * r), z(std::max(a.size(), b.size()), 0.0f);
        for (auto& x : a) x = fill.uniform(-0.015f, 0.015f);
        for (auto& x : b) x = fill.uniform(-0.01f, 0.01f);
        lo.A.assign(be, a.data(), a.size());
        lo.B.assign(be, b.data(), b.size());
        for (Buffer<float>* g : {&lo.gA, &lo.mA, &lo.vA}) g->assign(be, z.data(), a.size());
        for (Buffer<float>* g : {&lo.gB, &lo.mB, &lo.vB}) g->assign(be, z.data(), b.size());
        lin.lora = &lo;
      }
    }
    Buffer<uint16_t> head;
    upload16(head, int64_t{V} * H);
    Buffer<float> norm;
    norm.assign(be, ones.data(), H);
    std::vector<float> embed(static_cast<size_t>(V) * H);  // host
    for (auto& x : embed) x = fill.uniform(-0.02f, 0.02f);
    std::vector<float> inv_freq(d / 2);
    for (int i = 0; i < d / 2; ++i) inv_freq[i] = 1.0f / std::pow(500000.0f, 2.0f * i / d);
    Buffer<float> inv;
    inv.assign(be, inv_freq.data(), inv_freq.size());

    // ---- inputs and buffers
    lathe::Rng rng(1, 1);
    std::vector<int32_t> tokens(N), labels(N), pos(N);
    for (int i = 0; i < N; ++i) tokens[i] = static_cast<int32_t>(rng.next() % V), pos[i] = i;
    for (int i = 0; i < N; ++i) labels[i] = i + 1 < N ? tokens[i + 1] : -100;
    std::vector<float> xh(static_cast<size_t>(N) * H);
    Buffer<float> x, tmp, xf, hf, rstdf, dx, dh, datt, dq, dk, dv, dg, du, attn_scratch, lin1, lin2, logits, dhf;
    auto sz = [](int64_t a, int64_t b) { return static_cast<size_t>(a * b); };
    x.resize(be, sz(N, H)); tmp.resize(be, sz(N, H)); xf.resize(be, sz(N, H)); hf.resize(be, sz(N, H)); rstdf.resize(be, N);
    dx.resize(be, sz(N, H)); dh.resize(be, sz(N, H)); dhf.resize(be, sz(N, H)); datt.resize(be, sz(N, qd)); dq.resize(be, sz(N, qd));
    dk.resize(be, sz(N, kd)); dv.resize(be, sz(N, kd)); dg.resize(be, sz(N, I)); du.resize(be, sz(N, I));
    attn_scratch.resize(be, sz(2 * N, qd)); logits.resize(be, sz(CR, V));
    for (Layer& Ly : layers) Ly.x_in.resize(be, sz(N, H));
    Acts A;
    A.h1.resize(be, sz(N, H)); A.rstd1.resize(be, N); A.q.resize(be, sz(N, qd)); A.k.resize(be, sz(N, kd)); A.v.resize(be, sz(N, kd));
    A.att.resize(be, sz(N, qd)); A.lse.resize(be, sz(N, nh)); A.x_mid.resize(be, sz(N, H)); A.h2.resize(be, sz(N, H)); A.rstd2.resize(be, N);
    A.g.resize(be, sz(N, I)); A.u.resize(be, sz(N, I)); A.a.resize(be, sz(N, I));
    lathe::Rng drop(3, 3);

    auto layer_forward = [&](Layer& Ly) {
      op.rmsnorm_forward(be.ctx, A.h1.data(), A.rstd1.data(), x.data(), Ly.ln1.data(), N, H, 1e-5f);
      lathe::linear_forward(be, A.q.data(), A.h1.data(), N, Ly.lin[0], drop, true, lin1);
      lathe::linear_forward(be, A.k.data(), A.h1.data(), N, Ly.lin[1], drop, true, lin1);
      lathe::linear_forward(be, A.v.data(), A.h1.data(), N, Ly.lin[2], drop, true, lin1);
      op.rope_forward(be.ctx, A.q.data(), pos.data(), inv.data(), N, nh, d);
      op.rope_forward(be.ctx, A.k.data(), pos.data(), inv.data(), N, nkv, d);
      op.attention_forward(be.ctx, A.att.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), nullptr, 1, T, nh, nkv, d);
      lathe::linear_forward(be, tmp.data(), A.att.data(), N, Ly.lin[3], drop, true, lin1);
      op.add(be.ctx, x.data(), tmp.data(), int64_t{N} * H);
      op.copy(be.ctx, A.x_mid.data(), x.data(), int64_t{N} * H);
      op.rmsnorm_forward(be.ctx, A.h2.data(), A.rstd2.data(), x.data(), Ly.ln2.data(), N, H, 1e-5f);
      lathe::linear_forward(be, A.g.data(), A.h2.data(), N, Ly.lin[4], drop, true, lin1);
      lathe::linear_forward(be, A.u.data(), A.h2.data(), N, Ly.lin[5], drop, true, lin1);
      op.swiglu_forward(be.ctx, A.a.data(), A.g.data(), A.u.data(), int64_t{N} * I);
      lathe::linear_forward(be, tmp.data(), A.a.data(), N, Ly.lin[6], drop, true, lin1);
      op.add(be.ctx, x.data(), tmp.data(), int64_t{N} * H);
    };

    double last_loss = 0.0;
    auto step = [&] {
      for (Layer& Ly : layers)
        for (lathe::LoRA& lo : Ly.lora) {
          op.zero(be.ctx, lo.gA.data(), static_cast<int64_t>(lo.gA.size()));
          op.zero(be.ctx, lo.gB.data(), static_cast<int64_t>(lo.gB.size()));
        }
      for (int i = 0; i < N; ++i) std::memcpy(&xh[static_cast<size_t>(i) * H], &embed[static_cast<size_t>(tokens[i]) * H], sizeof(float) * H);
      op.upload(be.ctx, x.data(), xh.data(), sizeof(float) * xh.size());
      for (Layer& Ly : layers) {  // forward, checkpointed: keep each layer's input only
        op.copy(be.ctx, Ly.x_in.data(), x.data(), int64_t{N} * H);
        layer_forward(Ly);
      }
      op.copy(be.ctx, xf.data(), x.data(), int64_t{N} * H);
      op.rmsnorm_forward(be.ctx, hf.data(), rstdf.data(), xf.data(), norm.data(), N, H, 1e-5f);
      // loss and d loss / d hf, a chunk of rows at a time through the bf16 head
      int64_t count = 0;
      for (int i = 0; i < N; ++i) count += labels[i] != -100;
      const float coef = 1.0f / static_cast<float>(count);
      double loss = 0.0;
      for (int c0 = 0; c0 < N; c0 += CR) {
        const int m = std::min(CR, N - c0);
        op.bf16_matmul(be.ctx, true, m, V, H, hf.data() + int64_t{c0} * H, head.data(), H, false, logits.data());
        op.cross_entropy(be.ctx, logits.data(), labels.data() + c0, m, V, coef, true, &loss, nullptr);
        op.bf16_matmul(be.ctx, false, m, H, V, logits.data(), head.data(), H, false, dhf.data() + int64_t{c0} * H);
      }
      last_loss = loss / static_cast<double>(count);
      op.rmsnorm_backward(be.ctx, dx.data(), false, dhf.data(), xf.data(), norm.data(), rstdf.data(), N, H);
      for (int l = L - 1; l >= 0; --l) {
        Layer& Ly = layers[l];
        op.copy(be.ctx, x.data(), Ly.x_in.data(), int64_t{N} * H);
        layer_forward(Ly);  // recompute
        lathe::linear_backward(be, du.data(), false, dx.data(), A.a.data(), N, Ly.lin[6], lin1, lin2);
        op.swiglu_backward(be.ctx, dg.data(), du.data(), du.data(), A.g.data(), A.u.data(), int64_t{N} * I);
        lathe::linear_backward(be, dh.data(), false, dg.data(), A.h2.data(), N, Ly.lin[4], lin1, lin2);
        lathe::linear_backward(be, dh.data(), true, du.data(), A.h2.data(), N, Ly.lin[5], lin1, lin2);
        op.rmsnorm_backward(be.ctx, dx.data(), true, dh.data(), A.x_mid.data(), Ly.ln2.data(), A.rstd2.data(), N, H);
        lathe::linear_backward(be, datt.data(), false, dx.data(), A.att.data(), N, Ly.lin[3], lin1, lin2);
        op.attention_backward(be.ctx, dq.data(), dk.data(), dv.data(), attn_scratch.data(), datt.data(), A.att.data(), A.lse.data(), A.q.data(),
                              A.k.data(), A.v.data(), nullptr, 1, T, nh, nkv, d);
        op.rope_backward(be.ctx, dq.data(), pos.data(), inv.data(), N, nh, d);
        op.rope_backward(be.ctx, dk.data(), pos.data(), inv.data(), N, nkv, d);
        float* dhp = l > 0 ? dh.data() : nullptr;
        lathe::linear_backward(be, dhp, false, dq.data(), A.h1.data(), N, Ly.lin[0], lin1, lin2);
        lathe::linear_backward(be, dhp, true, dk.data(), A.h1.data(), N, Ly.lin[1], lin1, lin2);
        lathe::linear_backward(be, dhp, true, dv.data(), A.h1.data(), N, Ly.lin[2], lin1, lin2);
        if (l > 0) op.rmsnorm_backward(be.ctx, dx.data(), true, dh.data(), Ly.x_in.data(), Ly.ln1.data(), A.rstd1.data(), N, H);
      }
      // clip to 1.0 and AdamW
      double ss = 0.0;
      for (Layer& Ly : layers)
        for (lathe::LoRA& lo : Ly.lora)
          ss += op.sumsq(be.ctx, lo.gA.data(), static_cast<int64_t>(lo.gA.size())) + op.sumsq(be.ctx, lo.gB.data(), static_cast<int64_t>(lo.gB.size()));
      const float clip = static_cast<float>(1.0 / (std::sqrt(ss) + 1e-6));
      static int64_t t = 0;
      ++t;
      for (Layer& Ly : layers)
        for (lathe::LoRA& lo : Ly.lora) {
          if (clip < 1.0f) {
            op.scale(be.ctx, lo.gA.data(), static_cast<int64_t>(lo.gA.size()), clip);
            op.scale(be.ctx, lo.gB.data(), static_cast<int64_t>(lo.gB.size()), clip);
          }
          op.adamw_update(be.ctx, lo.A.data(), lo.gA.data(), lo.mA.data(), lo.vA.data(), static_cast<int64_t>(lo.A.size()), t, 1e-4f, 0.9f, 0.999f,
                          1e-8f, 0.0f);
          op.adamw_update(be.ctx, lo.B.data(), lo.gB.data(), lo.mB.data(), lo.vB.data(), static_cast<int64_t>(lo.B.size()), t, 1e-4f, 0.9f, 0.999f,
                          1e-8f, 0.0f);
        }
      lathe::cuda::synchronize(be.ctx);
    };

    step();  // warm-up: plans, pool growth
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s) step();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = steps * double(N) / secs;
    const double mfu = tps * 4.0 * double(params) / (peak_tflops * 1e12);
    const lathe::cuda::MemoryStats ms = lathe::cuda::memory_stats(be.ctx);
    std::printf("{\"engine\":\"lathe-cuda\",\"mode\":\"%s\",\"attention\":\"%s\",\"layers\":%d,\"tokens_per_step\":%d,\"steps\":%d,\"params\":%lld,\"tokens_per_s\":%.1f,"
                "\"step_s\":%.4f,\"peak_bytes\":%zu,\"held_peak_bytes\":%zu,\"mfu\":%.4f,\"peak_tflops\":%.1f,\"loss\":%.5f}\n",
                mode.c_str(), attn.c_str(), L, N, steps, static_cast<long long>(params), tps, secs / steps, ms.pool_peak, ms.peak, mfu, peak_tflops, last_loss);
    // Buffers release into `be` before it goes: they are declared after it, so they go first.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_bench %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
  return 0;
}
