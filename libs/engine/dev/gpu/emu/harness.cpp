// dev/gpu/emu/harness.cpp — src/cuda's attention (f32 and tensor-core) and cross-entropy launchers,
// run under emu.h, against a naive f64 reference; prints one line per case and "N failed".
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "cuda/ops.h"
#include "kernels/cross_entropy.h"
using namespace lathe::cuda;
static std::mt19937 rng(5);
std::vector<float> rnd(size_t n, float lo = -1, float hi = 1) { std::uniform_real_distribution<float> u(lo, hi); std::vector<float> v(n); for (auto& x : v) x = u(rng); return v; }
double rel(const std::vector<float>& want, const std::vector<float>& got) {
  double mx = 0, e = 0; for (float w : want) mx = std::max(mx, (double)std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) { double d = std::fabs((double)got[i] - want[i]); e = std::isfinite(d) ? std::max(e, d) : INFINITY; }
  return e / mx;
}
// naive reference in double
void ref(int B, int T, int nh, int nkv, int d, const std::vector<int>& seg, const std::vector<float>& q, const std::vector<float>& k,
         const std::vector<float>& v, const std::vector<float>& dout, std::vector<float>& out, std::vector<float>& lse, std::vector<float>& dq,
         std::vector<float>& dk, std::vector<float>& dv) {
  const int rep = nh / nkv; const double sc = 1.0 / std::sqrt((double)d);
  out.assign(q.size(), 0); lse.assign((size_t)B * nh * T, 0); dq.assign(q.size(), 0); dk.assign(k.size(), 0); dv.assign(v.size(), 0);
  for (int b = 0; b < B; ++b) for (int h = 0; h < nh; ++h) {
    const int g = h / rep;
    for (int i = 0; i < T; ++i) {
      std::vector<double> s(T, -INFINITY), p(T, 0);
      double m = -INFINITY;
      for (int j = 0; j <= i; ++j) {
        if (!seg.empty() && seg[b * T + j] != seg[b * T + i]) continue;
        double a = 0; for (int c = 0; c < d; ++c) a += (double)q[((size_t)(b * T + i) * nh + h) * d + c] * k[((size_t)(b * T + j) * nkv + g) * d + c];
        s[j] = a * sc; m = std::max(m, s[j]);
      }
      double sum = 0; for (int j = 0; j < T; ++j) if (s[j] > -INFINITY) { p[j] = std::exp(s[j] - m); sum += p[j]; }
      for (int j = 0; j < T; ++j) p[j] /= sum;
      lse[((size_t)b * nh + h) * T + i] = m + std::log(sum);
      std::vector<double> o(d, 0);
      for (int j = 0; j < T; ++j) if (p[j] > 0) for (int c = 0; c < d; ++c) o[c] += p[j] * v[((size_t)(b * T + j) * nkv + g) * d + c];
      for (int c = 0; c < d; ++c) out[((size_t)(b * T + i) * nh + h) * d + c] = o[c];
      double D = 0; for (int c = 0; c < d; ++c) D += (double)dout[((size_t)(b * T + i) * nh + h) * d + c] * o[c];
      for (int j = 0; j < T; ++j) {
        if (p[j] == 0) continue;
        double dp = 0; for (int c = 0; c < d; ++c) dp += (double)dout[((size_t)(b * T + i) * nh + h) * d + c] * v[((size_t)(b * T + j) * nkv + g) * d + c];
        const double ds = p[j] * (dp - D) * sc;
        for (int c = 0; c < d; ++c) {
          dq[((size_t)(b * T + i) * nh + h) * d + c] += ds * k[((size_t)(b * T + j) * nkv + g) * d + c];
          dk[((size_t)(b * T + j) * nkv + g) * d + c] += ds * q[((size_t)(b * T + i) * nh + h) * d + c];
          dv[((size_t)(b * T + j) * nkv + g) * d + c] += p[j] * dout[((size_t)(b * T + i) * nh + h) * d + c];
        }
      }
    }
  }
}
void lohi(int B, int T, const std::vector<int>& seg, std::vector<int>& lh) {  // as backend.cu (contiguous ids assumed)
  const int N = B * T; lh.assign(2 * N, 0);
  for (int b = 0; b < B; ++b) {
    const int* r = &seg[b * T];
    for (int t = 0; t < T; ++t) lh[b * T + t] = (t == 0 || r[t] != r[t - 1]) ? t : lh[b * T + t - 1];
    for (int t = T - 1; t >= 0; --t) lh[N + b * T + t] = (t == T - 1 || r[t] != r[t + 1]) ? t + 1 : lh[N + b * T + t + 1];
  }
}
int main() {
  int fails = 0;
  struct C { int B, T, nh, nkv, d; };
  for (bool tc : {false, true})
    for (C a : {C{2, 45, 4, 2, 32}, C{1, 130, 4, 2, 64}, C{1, 77, 2, 1, 128}, C{1, 70, 2, 2, 48}}) {
      if (tc && a.d != 64 && a.d != 128) continue;
      for (int segs : {0, 3, -1}) {
        const int N = a.B * a.T;
        std::vector<int> seg;
        if (segs > 0) { seg.resize(N); for (int b = 0; b < a.B; ++b) for (int t = 0; t < a.T; ++t) seg[b * a.T + t] = t * segs / a.T; }
        else if (segs < 0) { seg.resize(N); for (int i = 0; i < N; ++i) seg[i] = (i / 7) % 3; }
        std::vector<int> lh; if (segs > 0) lohi(a.B, a.T, seg, lh);
        const size_t qn = (size_t)N * a.nh * a.d, kn = (size_t)N * a.nkv * a.d;
        auto q = rnd(qn), k = rnd(kn), v = rnd(kn), dout = rnd(qn);
        std::vector<float> ro, rl, rdq, rdk, rdv; ref(a.B, a.T, a.nh, a.nkv, a.d, seg, q, k, v, dout, ro, rl, rdq, rdk, rdv);
        std::vector<float> out(qn, 7), lse(rl.size(), 7), dq(qn, 7), dk(kn, 7), dv(kn, 7), scratch(2 * qn, 7);
        Ctx c; c.attention_tc = tc;
        const int32_t* sp = seg.empty() ? nullptr : seg.data();
        const int32_t* lo = lh.empty() ? nullptr : lh.data();
        const int32_t* hi = lh.empty() ? nullptr : lh.data() + N;
        attention_forward(c, out.data(), lse.data(), q.data(), k.data(), v.data(), sp, lo, hi, a.B, a.T, a.nh, a.nkv, a.d);
        attention_backward(c, dq.data(), dk.data(), dv.data(), scratch.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(), v.data(), sp, lo, hi, a.B, a.T, a.nh, a.nkv, a.d);
        const double tol = tc ? 3e-2 : 1e-4;
        double e[5] = {rel(ro, out), rel(rl, lse), rel(rdq, dq), rel(rdk, dk), rel(rdv, dv)};
        bool ok = true; for (double x : e) ok &= x <= tol;
        fails += !ok;
        std::printf("%s %s B%d T%d %d/%d d%d segs%d: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", ok ? "ok  " : "FAIL", tc ? "tc " : "f32", a.B, a.T, a.nh, a.nkv, a.d, segs, e[0], e[1], e[2], e[3], e[4]);
      }
    }
  // cross-entropy and rmsnorm against the shared row math
  for (int V : {1000, 3001}) {
    const int rows = 5; auto l = rnd((size_t)rows * V, -8, 8); l[V + 3] = l[V + 900] = 30; int32_t lab[rows] = {5, 3, -100, 17, 999};
    auto g = l; std::vector<double> rl(rows); std::vector<uint8_t> hit(rows);
    cross_entropy_rows(*new Ctx, g.data(), lab, rows, V, 0.25f, true, rl.data(), hit.data());
    for (int r = 0; r < rows; ++r) {
      const float* x = &l[(size_t)r * V]; if (lab[r] < 0) { bool z = true; for (int j = 0; j < V; ++j) z &= g[(size_t)r * V + j] == 0; std::printf("%s ce unlabelled row zero\n", z ? "ok  " : "FAIL"); fails += !z; continue; }
      float mx = x[0]; int am = 0; for (int j = 1; j < V; ++j) if (x[j] > mx) { mx = x[j]; am = j; }
      double s = 0; for (int j = 0; j < V; ++j) s += std::exp((double)x[j] - mx);
      const double lse = mx + std::log(s), loss = lse - x[lab[r]];
      double ge = 0; for (int j = 0; j < V; ++j) { double want = 0.25 * std::exp(x[j] - lse) - (j == lab[r] ? 0.25 : 0); ge = std::max(ge, std::fabs(want - g[(size_t)r * V + j])); }
      const bool ok = std::fabs(loss - rl[r]) < 1e-5 * std::fabs(loss) && hit[r] == (am == lab[r]) && ge < 1e-6;
      fails += !ok; std::printf("%s ce V%d row %d loss %.6f/%.6f hit %d/%d grad err %.1e\n", ok ? "ok  " : "FAIL", V, r, rl[r], loss, hit[r], am == lab[r], ge);
    }
  }
  std::printf("%d failed\n", fails);
  return fails != 0;
}
