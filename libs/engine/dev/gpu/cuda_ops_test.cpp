// dev/gpu/cuda_ops_test.cpp — every op of the CUDA backend against the CPU backend's, on random
// data of awkward sizes (not multiples of the tiles), one op at a time, so that a failure names
// the op. The whole-model comparison (golden cases, LoRA and QLoRA, 3 AdamW steps) is
// test_backends.cpp in lathe_engine_test, which runs every registered backend, "cuda" included.
//
// Tolerances (max |cuda - cpu| <= tol * max |cpu|, per output):
//   f32 ops (element-wise, norms, RoPE, attention, cross-entropy, AdamW, f32 GEMM): 1e-4 — the
//   same f32 formulas (src/kernels/) with sums in another order and the GPU's libm;
//   bf16 products (bf16_matmul, NF4 matmuls): 1e-2 — both sides round the activation to bf16, the
//   GPU also rounds the dequantised NF4 weight to bf16 (2^-9 relative per element);
//   the tensor-core attention (q, k, v, dout and the probabilities rounded to bf16): 3e-2.
// Exact: label counts (correct). The loss sum: 1e-7 relative. Both sides sum in f64, but each
// row's terms are f32 exponentials of two implementations (CUDA's expf, within 2 ulp; the CPU's
// polynomial of kernels/exp.h, within ~2e-7), so a shared bias of the terms moves each row's
// logsumexp by up to ~1e-7: the CPU polynomial against libm's expf already differs by up to
// ~2e-10 of the sum here, and a 1-ulp bias of the GPU's terms would give ~5e-9.
// Prints each check and "N passed, M failed"; exits 1 on a failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend.h"
#include "bf16.h"
#include "common.h"
#include "cuda/backend_cuda.h"
#include "nf4.h"
#include "rng.h"
#include "threads.h"

namespace {

using lathe::Backend;
using lathe::Buffer;

int passed = 0, failed = 0;

void report(const std::string& what, double err, double tol) {
  const bool ok = err <= tol;
  (ok ? passed : failed)++;
  std::printf("%s %-52s rel err %.3e (tol %.1e)\n", ok ? "ok  " : "FAIL", what.c_str(), err, tol);
}

double rel_err(const std::vector<float>& want, const std::vector<float>& got) {
  double mx = 0, err = 0;
  for (float w : want) mx = std::max(mx, double(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(double(got[i]) - want[i]);
    err = std::isfinite(e) ? std::max(err, e) : INFINITY;
  }
  return mx > 0 ? err / mx : err;
}

std::vector<float> rnd(lathe::Rng& r, size_t n, float lo = -1, float hi = 1) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * r.uniform();
  return v;
}

struct Pair {
  lathe::ThreadPool pool{4};
  Backend cpu, gpu;
  Pair() {
    cpu.reset(lathe_backend_cpu(), &pool);
    gpu.reset(lathe_backend_cuda(), nullptr);
  }
  Buffer<float> up(const std::vector<float>& v) {
    Buffer<float> b;
    b.assign(gpu, v.data(), v.size());
    return b;
  }
};

}  // namespace

int main() {
  if (!lathe_backend_cuda()) {
    std::printf("no CUDA device\n0 passed, 1 failed\n");
    return 1;
  }
  try {
    Pair P;
    const lathe_backend& C = *P.cpu.ops;
    const lathe_backend& G = *P.gpu.ops;
    lathe::Rng rng(42, 7);
    const float tol32 = 1e-4f, tol16 = 1e-2f;

    // ---- element-wise
    {
      const int rows = 37, cols = 203;
      const int64_t n = int64_t{rows} * cols;
      auto y = rnd(rng, n), x = rnd(rng, n), bias = rnd(rng, cols);
      auto dy = P.up(y), dxb = P.up(x), db = P.up(bias);
      C.add(P.cpu.ctx, y.data(), x.data(), n);
      G.add(P.gpu.ctx, dy.data(), dxb.data(), n);
      report("add", rel_err(y, dy.to_host()), tol32);
      C.add_bias(P.cpu.ctx, y.data(), bias.data(), rows, cols);
      G.add_bias(P.gpu.ctx, dy.data(), db.data(), rows, cols);
      report("add_bias", rel_err(y, dy.to_host()), tol32);
      std::vector<int32_t> idx = {5, 0, 36, 17, 17, 2};
      std::vector<float> g(idx.size() * cols);
      Buffer<float> dg;
      dg.resize(P.gpu, g.size());
      C.gather_rows(P.cpu.ctx, g.data(), y.data(), idx.data(), static_cast<int>(idx.size()), cols);
      G.gather_rows(P.gpu.ctx, dg.data(), dy.data(), idx.data(), static_cast<int>(idx.size()), cols);
      report("gather_rows", rel_err(g, dg.to_host()), 0);
      idx = {3, 9, 0, 30};
      std::vector<float> s(idx.size() * cols, 0.5f);
      auto ds = P.up(s);
      C.scatter_rows(P.cpu.ctx, y.data(), s.data(), idx.data(), static_cast<int>(idx.size()), cols);
      G.scatter_rows(P.gpu.ctx, dy.data(), ds.data(), idx.data(), static_cast<int>(idx.size()), cols);
      report("scatter_rows", rel_err(y, dy.to_host()), 0);
      std::vector<uint8_t> mask(n);
      for (auto& m : mask) m = rng.uniform() >= 0.1f;
      std::vector<float> o(n);
      Buffer<float> dout;
      dout.resize(P.gpu, n);
      C.dropout_forward(P.cpu.ctx, o.data(), x.data(), mask.data(), 1.0f / 0.9f, n);
      G.dropout_forward(P.gpu.ctx, dout.data(), dxb.data(), mask.data(), 1.0f / 0.9f, n);
      report("dropout_forward", rel_err(o, dout.to_host()), tol32);
      C.dropout_backward(P.cpu.ctx, y.data(), x.data(), mask.data(), 1.0f / 0.9f, n);
      G.dropout_backward(P.gpu.ctx, dy.data(), dxb.data(), mask.data(), 1.0f / 0.9f, n);
      report("dropout_backward", rel_err(y, dy.to_host()), tol32);
      auto gg = rnd(rng, n, -9, 9), u = rnd(rng, n), da = rnd(rng, n);
      auto dgg = P.up(gg), du = P.up(u), dda = P.up(da);
      std::vector<float> a(n), dgv(n);
      Buffer<float> ga, gdg;
      ga.resize(P.gpu, n);
      gdg.resize(P.gpu, n);
      C.swiglu_forward(P.cpu.ctx, a.data(), gg.data(), u.data(), n);
      G.swiglu_forward(P.gpu.ctx, ga.data(), dgg.data(), du.data(), n);
      report("swiglu_forward", rel_err(a, ga.to_host()), tol32);
      C.swiglu_backward(P.cpu.ctx, dgv.data(), da.data(), da.data(), gg.data(), u.data(), n);
      G.swiglu_backward(P.gpu.ctx, gdg.data(), dda.data(), dda.data(), dgg.data(), du.data(), n);
      report("swiglu_backward dg", rel_err(dgv, gdg.to_host()), tol32);
      report("swiglu_backward du (aliasing da)", rel_err(da, dda.to_host()), tol32);
      const double s1 = C.sumsq(P.cpu.ctx, x.data(), n), s2 = G.sumsq(P.gpu.ctx, dxb.data(), n);
      report("sumsq (f64)", std::fabs(s1 - s2) / s1, 1e-12);
      C.scale(P.cpu.ctx, x.data(), n, 0.37f);
      G.scale(P.gpu.ctx, dxb.data(), n, 0.37f);
      report("scale", rel_err(x, dxb.to_host()), 0);
      auto p = rnd(rng, n), gr = rnd(rng, n, -1e-3f, 1e-3f), m = rnd(rng, n, -1e-4f, 1e-4f), v = rnd(rng, n, 0, 1e-6f);
      auto dp = P.up(p), dgr = P.up(gr), dm = P.up(m), dv = P.up(v);
      for (int64_t t = 1; t <= 3; ++t) {
        C.adamw_update(P.cpu.ctx, p.data(), gr.data(), m.data(), v.data(), n, t, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
        G.adamw_update(P.gpu.ctx, dp.data(), dgr.data(), dm.data(), dv.data(), n, t, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
      }
      report("adamw_update x3: params", rel_err(p, dp.to_host()), tol32);
      report("adamw_update x3: m", rel_err(m, dm.to_host()), tol32);
      report("adamw_update x3: v", rel_err(v, dv.to_host()), tol32);
      const int V = 301, N = 29, H = 77;
      auto E = rnd(rng, size_t{V} * H);
      auto dE = P.up(E);
      std::vector<int32_t> tok(N);
      for (auto& t : tok) t = static_cast<int32_t>(rng.next() % V);
      std::vector<float> xe(size_t{N} * H);
      Buffer<float> gxe;
      gxe.resize(P.gpu, xe.size());
      C.embedding_forward(P.cpu.ctx, xe.data(), tok.data(), E.data(), N, H);
      G.embedding_forward(P.gpu.ctx, gxe.data(), tok.data(), dE.data(), N, H);
      report("embedding_forward", rel_err(xe, gxe.to_host()), 0);
    }
    // ---- RMSNorm, RoPE
    for (int H : {77, 4096}) {
      const int N = 19;
      auto x = rnd(rng, size_t{N} * H, -3, 3), w = rnd(rng, H, 0.5f, 1.5f), dy = rnd(rng, size_t{N} * H);
      auto gx = P.up(x), gw = P.up(w), gdy = P.up(dy);
      std::vector<float> y(x.size()), rs(N), dx = rnd(rng, x.size());
      Buffer<float> gy, grs;
      gy.resize(P.gpu, y.size());
      grs.resize(P.gpu, N);
      auto gdx = P.up(dx);
      C.rmsnorm_forward(P.cpu.ctx, y.data(), rs.data(), x.data(), w.data(), N, H, 1e-5f);
      G.rmsnorm_forward(P.gpu.ctx, gy.data(), grs.data(), gx.data(), gw.data(), N, H, 1e-5f);
      report("rmsnorm_forward H=" + std::to_string(H), rel_err(y, gy.to_host()), tol32);
      report("rmsnorm_forward rstd H=" + std::to_string(H), rel_err(rs, grs.to_host()), tol32);
      C.rmsnorm_backward(P.cpu.ctx, dx.data(), true, dy.data(), x.data(), w.data(), rs.data(), N, H);
      G.rmsnorm_backward(P.gpu.ctx, gdx.data(), true, gdy.data(), gx.data(), gw.data(), grs.data(), N, H);
      report("rmsnorm_backward (added) H=" + std::to_string(H), rel_err(dx, gdx.to_host()), tol32);
    }
    {
      const int N = 23, heads = 3, d = 128;
      std::vector<int32_t> pos(N);
      for (auto& p : pos) p = static_cast<int32_t>(rng.next() % 8000);
      std::vector<float> inv(d / 2);
      for (int i = 0; i < d / 2; ++i) inv[i] = 1.0f / std::pow(500000.0f, 2.0f * i / d);
      auto x = rnd(rng, size_t{N} * heads * d);
      auto gx = P.up(x), ginv = P.up(inv);
      C.rope_forward(P.cpu.ctx, x.data(), pos.data(), inv.data(), N, heads, d);
      G.rope_forward(P.gpu.ctx, gx.data(), pos.data(), ginv.data(), N, heads, d);
      report("rope_forward", rel_err(x, gx.to_host()), tol32);
      C.rope_backward(P.cpu.ctx, x.data(), pos.data(), inv.data(), N, heads, d);
      G.rope_backward(P.gpu.ctx, gx.data(), pos.data(), ginv.data(), N, heads, d);
      report("rope_backward", rel_err(x, gx.to_host()), tol32);
    }
    // ---- cross-entropy (a tie for the first maximum, an unlabelled row)
    for (int V : {1000, 128256}) {
      const int rows = 7;
      auto l = rnd(rng, size_t{rows} * V, -8, 8);
      l[size_t{1} * V + 3] = l[size_t{1} * V + 900] = 30.0f;
      std::vector<int32_t> lab = {5, 3, -100, 17, 999, 0, 42};
      auto gl = P.up(l);
      double ls1 = 0.5, ls2 = 0.5;
      int64_t c1 = 1, c2 = 1;
      C.cross_entropy(P.cpu.ctx, l.data(), lab.data(), rows, V, 0.25f, true, &ls1, &c1);
      G.cross_entropy(P.gpu.ctx, gl.data(), lab.data(), rows, V, 0.25f, true, &ls2, &c2);
      const std::string tag = " V=" + std::to_string(V);
      report("cross_entropy loss sum" + tag, std::fabs(ls1 - ls2) / std::fabs(ls1), 1e-7);
      report("cross_entropy correct count" + tag, c1 == c2 ? 0.0 : 1.0, 0);
      report("cross_entropy gradient" + tag, rel_err(l, gl.to_host()), tol32);
    }
    // ---- matrix products
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int M = 33, N = 70, K = 129;
        auto A = rnd(rng, size_t{M} * K), B = rnd(rng, size_t{K} * N), Cm = rnd(rng, size_t{M} * N);
        auto gA = P.up(A), gB = P.up(B), gC = P.up(Cm);
        C.gemm(P.cpu.ctx, ta, tb, M, N, K, 0.7f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.5f, Cm.data(), N);
        G.gemm(P.gpu.ctx, ta, tb, M, N, K, 0.7f, gA.data(), ta ? M : K, gB.data(), tb ? K : N, 0.5f, gC.data(), N);
        report("gemm f32 ta=" + std::to_string(ta) + " tb=" + std::to_string(tb), rel_err(Cm, gC.to_host()), tol32);
      }
    for (int tw = 0; tw < 2; ++tw) {
      const int M = 45, N = 96, K = 200;
      auto x = rnd(rng, size_t{M} * K), y = rnd(rng, size_t{M} * N);
      std::vector<uint16_t> W(size_t{N} * K);
      for (auto& w : W) w = lathe::f32_to_bf16(rng.uniform() - 0.5f);
      Buffer<uint16_t> gW;
      gW.assign(P.gpu, W.data(), W.size());
      auto gx = P.up(x), gy = P.up(y);
      C.bf16_matmul(P.cpu.ctx, tw, M, N, K, x.data(), W.data(), tw ? K : N, true, y.data());
      G.bf16_matmul(P.gpu.ctx, tw, M, N, K, gx.data(), gW.data(), tw ? K : N, true, gy.data());
      report("bf16_matmul (added) trans_w=" + std::to_string(tw), rel_err(y, gy.to_host()), tol16);
    }
    {
      const int rows = 96, cols = 130, N = 21;  // odd element count: a padded last code
      auto w = rnd(rng, size_t{rows} * cols);
      const lathe::nf4::Quantized q = lathe::nf4::quantize_tensor(w.data(), rows, cols);
      lathe::nf4::Tensor4 tc = lathe::nf4::to_backend(P.cpu, q), tg = lathe::nf4::to_backend(P.gpu, q);
      tc.tile_elems = 1000;
      auto x = rnd(rng, size_t{N} * cols), dy = rnd(rng, size_t{N} * rows), dx = rnd(rng, size_t{N} * cols);
      std::vector<float> y(size_t{N} * rows);
      auto gx = P.up(x), gdy = P.up(dy), gdx = P.up(dx);
      Buffer<float> gyb;
      gyb.resize(P.gpu, y.size());
      C.nf4_matmul_nt(P.cpu.ctx, N, x.data(), tc, y.data());
      G.nf4_matmul_nt(P.gpu.ctx, N, gx.data(), tg, gyb.data());
      report("nf4_matmul_nt", rel_err(y, gyb.to_host()), tol16);
      C.nf4_matmul_nn(P.cpu.ctx, N, dy.data(), tc, dx.data(), true);
      G.nf4_matmul_nn(P.gpu.ctx, N, gdy.data(), tg, gdx.data(), true);
      report("nf4_matmul_nn (added)", rel_err(dx, gdx.to_host()), tol16);
    }
    // ---- attention: GQA, head dims 32/64/128, lengths off the tiles, contiguous and scattered segments
    struct AttCase {
      int B, T, nh, nkv, d;
    };
    // then the tensor-core variant (attention_tc.cu: head dims 64 and 128, bf16 products) at 3e-2
    for (const bool tc : {false, true})
    for (const AttCase& a : {AttCase{2, 45, 4, 2, 32}, AttCase{1, 130, 8, 2, 64}, AttCase{1, 200, 4, 1, 128}, AttCase{2, 77, 6, 3, 128},
                             AttCase{1, 300, 8, 8, 128}}) {
      if (tc && a.d != 64 && a.d != 128) continue;
      lathe::cuda::set_attention_tensor_cores(P.gpu.ctx, tc);
      const float tol_att = tc ? 3e-2f : tol32;
      for (int segs : {0, 3, -1}) {  // none; 3 contiguous segments per row; ids that come back (no tile skipping)
        const int64_t N = int64_t{a.B} * a.T, qn = N * a.nh * a.d, kn = N * a.nkv * a.d;
        std::vector<int32_t> seg;
        if (segs > 0) {
          seg.resize(N);
          for (int b = 0; b < a.B; ++b)
            for (int t = 0; t < a.T; ++t) seg[int64_t{b} * a.T + t] = t * segs / a.T;
        } else if (segs < 0) {
          seg.resize(N);
          for (int64_t i = 0; i < N; ++i) seg[i] = static_cast<int32_t>((i / 7) % 3);
        }
        const int32_t* sp = seg.empty() ? nullptr : seg.data();
        auto q = rnd(rng, qn), k = rnd(rng, kn), v = rnd(rng, kn), dout = rnd(rng, qn);
        auto gq = P.up(q), gk = P.up(k), gv = P.up(v), gdo = P.up(dout);
        std::vector<float> out(qn), lse(N * a.nh), dq(qn), dk(kn), dv(kn), scratch(2 * qn);
        Buffer<float> gout, glse, gdq, gdk, gdv, gs;
        gout.resize(P.gpu, qn); glse.resize(P.gpu, lse.size()); gdq.resize(P.gpu, qn); gdk.resize(P.gpu, kn); gdv.resize(P.gpu, kn);
        gs.resize(P.gpu, 2 * qn);
        C.attention_forward(P.cpu.ctx, out.data(), lse.data(), q.data(), k.data(), v.data(), sp, a.B, a.T, a.nh, a.nkv, a.d);
        G.attention_forward(P.gpu.ctx, gout.data(), glse.data(), gq.data(), gk.data(), gv.data(), sp, a.B, a.T, a.nh, a.nkv, a.d);
        C.attention_backward(P.cpu.ctx, dq.data(), dk.data(), dv.data(), scratch.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                             v.data(), sp, a.B, a.T, a.nh, a.nkv, a.d);
        G.attention_backward(P.gpu.ctx, gdq.data(), gdk.data(), gdv.data(), gs.data(), gdo.data(), gout.data(), glse.data(), gq.data(), gk.data(),
                             gv.data(), sp, a.B, a.T, a.nh, a.nkv, a.d);
        const std::string tag = std::string(tc ? " [tc]" : "") + " B" + std::to_string(a.B) + " T" + std::to_string(a.T) + " " + std::to_string(a.nh) + "/" + std::to_string(a.nkv) +
                                " d" + std::to_string(a.d) + (segs == 0 ? "" : segs > 0 ? " segs" : " scattered");
        report("attention out" + tag, rel_err(out, gout.to_host()), tol_att);
        report("attention lse" + tag, rel_err(lse, glse.to_host()), tol_att);
        report("attention dq" + tag, rel_err(dq, gdq.to_host()), tol_att);
        report("attention dk" + tag, rel_err(dk, gdk.to_host()), tol_att);
        report("attention dv" + tag, rel_err(dv, gdv.to_host()), tol_att);
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++failed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
