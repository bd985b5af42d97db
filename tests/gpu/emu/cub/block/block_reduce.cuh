// Emulator stand-in for cub::BlockReduce: a block-wide reduction in thread order whose result is
// defined in thread 0 only (the others get a sentinel, so code relying on them fails).
#pragma once
#include "cuda_runtime.h"
namespace cub {
template <typename T, int N>
struct BlockReduce {
  struct TempStorage {
    T v[N];
  };
  TempStorage& s;
  explicit BlockReduce(TempStorage& t) : s(t) {}
  template <typename Op>
  T Reduce(T x, Op op) {
    s.v[threadIdx.x] = x;
    emu::block_barrier();
    T acc = s.v[0];
    for (int i = 1; i < N; ++i) acc = op(acc, s.v[i]);
    // Only thread 0's result is defined in CUB: make the others garbage to catch misuse.
    if (threadIdx.x != 0) acc = T(-12345);
    emu::block_barrier();
    return acc;
  }
  T Sum(T x) {
    return Reduce(x, [](T a, T b) { return a + b; });
  }
};
}  // namespace cub
