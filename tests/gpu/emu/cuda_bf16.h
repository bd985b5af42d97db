// Emulator stand-in for <cuda_bf16.h>: bf16 as the upper 16 bits of an IEEE float, converted
// with round-to-nearest-even (NaN stays NaN), as __float2bfloat16_rn does on the device.
#pragma once
#include "cuda_runtime.h"
struct __nv_bfloat16 {
  uint16_t x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{uint16_t((b >> 16) | 0x40)};
  b += 0x7fffu + ((b >> 16) & 1u);
  return __nv_bfloat16{uint16_t(b >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t b = uint32_t(h.x) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
