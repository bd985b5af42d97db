// The KV-cache spans of the cached attention forward, shared by the native kernel
// (attention.cu) and the cuDNN gather (attention_cudnn.cu).
#pragma once

#include <cstdint>

namespace moe {

// Row b of a cached forward reads cache rows [start[b], start[b] + len[b]) of k_cache / v_cache.
struct CacheSpans {
  const int32_t* start;
  const int32_t* len;
  int64_t rows;  // rows of k_cache / v_cache
};

}  // namespace moe
