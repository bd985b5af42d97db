// Emulator stand-in for <cuda_runtime.h> (tests/gpu/emu/emu_core.h says what the emulator is):
// host memory for device memory (cudaMalloc poisons it with 0xff bytes), synchronous copies,
// and the few runtime types and calls kernels/ uses.
#pragma once
#include "emu_core.h"
typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorNoDevice = 100 };
typedef void* cudaStream_t;
enum { cudaStreamNonBlocking = 1 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
};
enum cudaDataType_t { CUDA_R_32F, CUDA_R_16BF };
inline int cudaGetDeviceCount(int* c) {
  *c = 1;
  return 0;
}
inline int cudaGetLastError() { return 0; }
inline int cudaSetDevice(int) { return 0; }
inline int cudaStreamCreateWithFlags(cudaStream_t* s, int) {
  *s = (void*)1;
  return 0;
}
inline int cudaStreamDestroy(cudaStream_t) { return 0; }
inline int cudaStreamSynchronize(cudaStream_t) { return 0; }
inline int cudaMalloc(void** p, size_t n) {  // 0xff bytes: NaN floats, -1 ints
  const size_t bytes = (n + 255) / 256 * 256 + 256;
  *p = std::aligned_alloc(256, bytes);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, bytes);
  return cudaSuccess;
}
template <typename T>
inline int cudaMalloc(T** p, size_t n) {
  return cudaMalloc((void**)p, n);
}
inline int cudaFree(void* p) {
  std::free(p);
  return 0;
}
inline int cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return 0;
}
inline int cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind,
                           cudaStream_t = nullptr) {
  std::memmove(d, s, n);
  return 0;
}
inline int cudaMemGetInfo(size_t* f, size_t* t) {
  *f = *t = 1ull << 34;
  return 0;
}
inline int cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::strcpy(p->name, "emulated");
  p->major = 9;
  p->minor = 0;
  p->totalGlobalMem = 1ull << 34;
  return 0;
}
inline const char* cudaGetErrorName(int) { return "emuError"; }
inline const char* cudaGetErrorString(int) { return "emulated error"; }
template <typename K>
inline int cudaFuncSetAttribute(K, cudaFuncAttribute, int) {
  return 0;
}
