// dev/gpu/emu/emu.h — a tiny CUDA emulator for reviewing kernels on a machine without a GPU (run.sh):
// each block's threads are ucontext coroutines and blocks run one after another; __syncthreads,
// warp barriers (a mismatch aborts as a deadlock), shuffles and WMMA fragments are collective.
#pragma once
#include <ucontext.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <cuda_runtime.h>
#include <vector_types.h>
#include <cuda_bf16.h>

namespace emu {
struct Thr { ucontext_t ctx; std::vector<char> stack; uint3 t; int state = 0; /*0 run,1 blockbar,2 warpbar,3 done*/ };
struct Sched {
  ucontext_t main;
  std::vector<Thr> th;
  int cur = -1;
  uint3 bid; dim3 bdim, gdim;
  std::vector<unsigned char> smem;
  std::function<void()> body;
  std::vector<uint64_t> slots;  // [warps*32]
};
inline Sched& S() { static Sched s; return s; }
inline Thr& cur() { return S().th[S().cur]; }
inline void yield_state(int st) { Sched& s = S(); s.th[s.cur].state = st; swapcontext(&s.th[s.cur].ctx, &s.main); }
inline void entry() { S().body(); yield_state(3); }
inline void syncthreads() { yield_state(1); }
inline void syncwarp() { yield_state(2); }
inline void launch(dim3 g, dim3 b, size_t smem, std::function<void()> body) {
  Sched& s = S();
  s.gdim = g; s.bdim = b; s.body = body;
  const int n = b.x * b.y * b.z;
  for (unsigned z = 0; z < g.z; ++z) for (unsigned y = 0; y < g.y; ++y) for (unsigned x = 0; x < g.x; ++x) {
    s.bid = {x, y, z};
    s.smem.assign(smem + 1024, 0xAB);  // garbage, as uninitialised shared memory
    if (static_cast<int>(s.th.size()) < n) s.th.resize(n);  // stacks kept from block to block
    s.slots.assign(((n + 31) / 32) * 32, 0);
    for (int i = 0; i < n; ++i) {
      Thr& t = s.th[i];
      if (t.stack.empty()) t.stack.resize(256 * 1024);
      getcontext(&t.ctx);
      t.ctx.uc_stack.ss_sp = t.stack.data();
      t.ctx.uc_stack.ss_size = t.stack.size();
      t.ctx.uc_link = &s.main;
      makecontext(&t.ctx, entry, 0);
      t.t = {unsigned(i % b.x), unsigned(i / b.x % b.y), unsigned(i / (b.x * b.y))};
      t.state = 0;
    }
    for (;;) {
      bool ran = false;
      for (int i = 0; i < n; ++i)
        if (s.th[i].state == 0) { s.cur = i; swapcontext(&s.main, &s.th[i].ctx); ran = true; }
      if (ran) continue;
      bool all_done = true;
      for (int i = 0; i < n; ++i) all_done &= s.th[i].state == 3;
      if (all_done) break;
      bool released = false;
      for (int w = 0; w < (n + 31) / 32; ++w) {  // warp barriers: every live lane of the warp there
        bool any = false, all = true;
        for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) {
          if (s.th[l].state == 2) any = true;
          else if (s.th[l].state != 3) all = false;
        }
        if (any && all) { for (int l = w * 32; l < std::min(n, w * 32 + 32); ++l) if (s.th[l].state == 2) s.th[l].state = 0; released = true; }
      }
      if (released) continue;
      bool allb = true, anyb = false;
      for (int i = 0; i < n; ++i) { if (s.th[i].state == 1) anyb = true; else if (s.th[i].state != 3) allb = false; }
      if (anyb && allb) { for (int i = 0; i < n; ++i) if (s.th[i].state == 1) s.th[i].state = 0; continue; }
      std::fprintf(stderr, "EMU DEADLOCK: barrier mismatch in block (%u,%u,%u)\n", s.bid.x, s.bid.y, s.bid.z);
      std::abort();
    }
  }
}
inline unsigned char* dyn_smem() { return S().smem.data(); }
template <class T> T shfl_idx(T v, int src) {
  Sched& s = S(); const int me = s.cur, base = me & ~31;
  uint64_t b = 0; std::memcpy(&b, &v, sizeof v); s.slots[me] = b;
  syncwarp();
  T r; uint64_t o = s.slots[base + (src & 31)]; std::memcpy(&r, &o, sizeof r);
  syncwarp();
  return r;
}
template <class T> T shfl_xor(T v, int m) { return shfl_idx(v, (S().cur & 31) ^ m); }
inline bool any(bool p) {
  Sched& s = S(); const int me = s.cur, base = me & ~31;
  s.slots[me] = p; syncwarp();
  bool r = false; for (int l = 0; l < 32; ++l) r |= s.slots[base + l] != 0;
  syncwarp(); return r;
}
}  // namespace emu

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(x)
#define threadIdx (emu::cur().t)
#define blockIdx (emu::S().bid)
#define blockDim (emu::S().bdim)
#define gridDim (emu::S().gdim)
#define __syncthreads() emu::syncthreads()
#define __syncwarp() emu::syncwarp()
#define __shfl_xor_sync(m, v, o) emu::shfl_xor(v, o)
#define __shfl_sync(m, v, s) emu::shfl_idx(v, s)
#define __any_sync(m, p) emu::any(p)
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
using std::min;
using std::max;

namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {}; struct row_major {}; struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class L = void> struct fragment { float x[256]; };
inline float tof(float v) { return v; }
inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class Use, class T, class L> void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ld) {
  emu::syncwarp();
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c)
    f.x[r * 16 + c] = tof(std::is_same<L, col_major>::value ? p[c * ld + r] : p[r * ld + c]);
}
template <class T> void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld, layout_t l) {
  emu::syncwarp();
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_row_major ? p[r * ld + c] : p[c * ld + r];
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld, layout_t l) { load_matrix_sync<float>(f, p, ld, l); }
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld, layout_t l) {
  emu::syncwarp();
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[r * 16 + c];
  emu::syncwarp();
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) { for (float& x : f.x) x = v; }
template <class A, class B>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const A& a, const B& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float r[256];
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j) { float s = c.x[i * 16 + j]; for (int k = 0; k < 16; ++k) s += a.x[i * 16 + k] * b.x[k * 16 + j]; r[i * 16 + j] = s; }
  std::memcpy(d.x, r, sizeof r);
}
}}  // namespace nvcuda::wmma
