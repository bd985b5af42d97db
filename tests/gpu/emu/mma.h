// Emulator stand-in for <mma.h> (WMMA): every lane holds the whole 16x16 fragment and does the
// whole product (fp32 accumulation); the warp barrier in each call makes a divergent WMMA call
// (one some lanes skip) an error, as it is on the device.
#pragma once
#include "cuda_bf16.h"
namespace nvcuda {
namespace wmma {
struct row_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major };
template <typename Use, int M, int N, int K, typename T, typename L = void>
struct fragment {
  float v[16][16];
};
template <typename F>
void fill_fragment(F& f, float x) {
  for (auto& r : f.v)
    for (float& e : r) e = x;
}
inline float tof(float x) { return x; }
inline float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename F, typename T>
void load_matrix_sync(F& f, const T* p, unsigned ld) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = tof(p[r * ld + c]);
  emu::warp_barrier();  // collective: every lane must take part
}
template <typename D, typename A, typename B, typename C>
void mma_sync(D& d, const A& a, const B& b, const C& c) {
  float out[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = c.v[i][j];
      for (int k = 0; k < 16; ++k) s += a.v[i][k] * b.v[k][j];
      out[i][j] = s;
    }
  std::memcpy(d.v, out, sizeof(out));
  emu::warp_barrier();
}
template <typename F>
void store_matrix_sync(float* p, const F& f, unsigned ld, layout_t) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[r * ld + c] = f.v[r][c];
  emu::warp_barrier();
}
}  // namespace wmma
}  // namespace nvcuda
