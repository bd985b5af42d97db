// MOE_HD marks scalar helpers shared between the CPU loops (lib/) and the CUDA kernels (kernels/).
#pragma once
#if defined(__CUDACC__)
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD inline
#endif
