// Emulator stand-in for cub::BlockScan::ExclusiveSum (with the block aggregate).
#pragma once
#include "cuda_runtime.h"
namespace cub {
template <typename T, int N>
struct BlockScan {
  struct TempStorage {
    T v[N];
  };
  TempStorage& s;
  explicit BlockScan(TempStorage& t) : s(t) {}
  void ExclusiveSum(T x, T& out, T& total) {
    s.v[threadIdx.x] = x;
    emu::block_barrier();
    T acc = 0, all = 0;
    for (int i = 0; i < N; ++i) {
      if (i < (int)threadIdx.x) acc += s.v[i];
      all += s.v[i];
    }
    out = acc;
    total = all;
    emu::block_barrier();
  }
};
}  // namespace cub
