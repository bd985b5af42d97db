// Emulator stand-in for cub::DeviceRadixSort::SortPairs: a stable sort on the key bits
// [begin_bit, end_bit) of the sign-flipped key, as CUB orders signed integers.
#pragma once
#include <algorithm>
#include <numeric>
#include "cuda_runtime.h"
namespace cub {
struct DeviceRadixSort {
  template <typename K, typename V, typename NI>
  static int SortPairs(void* temp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout,
                       NI n, int b0, int b1, cudaStream_t = nullptr) {
    if (temp == nullptr) {
      bytes = 64;
      return 0;
    }
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto key = [&](int64_t i) {
      uint64_t k = uint32_t(kin[i]) ^ 0x80000000u;
      return (k >> b0) & ((1ull << (b1 - b0)) - 1);
    };
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return key(a) < key(b); });
    std::vector<K> k2(n);
    std::vector<V> v2(n);
    for (int64_t i = 0; i < (int64_t)n; ++i) {
      k2[i] = kin[idx[i]];
      v2[i] = vin[idx[i]];
    }
    std::copy(k2.begin(), k2.end(), kout);
    std::copy(v2.begin(), v2.end(), vout);
    return 0;
  }
};
}  // namespace cub
