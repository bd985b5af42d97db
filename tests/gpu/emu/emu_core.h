// Host emulation of the CUDA execution model, used by tools/gpu_emulate.sh to run kernels/*.cu
// and the GPU tests on a machine without a GPU. It is a checking aid, not a CUDA implementation:
//
// - Every CUDA thread of a block is a ucontext fiber; all fibers run on ONE OS thread, so there
//   are no data races and results are deterministic. Blocks run one after another.
// - __syncthreads() and the warp shuffles are cooperative barriers. A barrier that not every
//   live thread of the block (or warp) reaches is reported and aborts: this catches divergent
//   __syncthreads and shuffles that the hardware might hang on or silently mis-execute.
// - __shared__ becomes `static` (blocks run one at a time); dynamic shared memory is one buffer
//   poisoned with NaN before each block; cudaMalloc'd memory is poisoned with 0xff bytes.
// - Arithmetic is the host's fp32/fp64, not the GPU's (no tensor-core rounding, no fast-math);
//   WMMA fragments hold whole 16x16 tiles per lane. Timing means nothing.
// What it checks: index arithmetic, bounds, barrier placement, accumulate/overwrite semantics,
// the cuBLASLt/cuBLAS call parameters (tests/gpu/emu/cublasLt.h validates layouts and
// alignment), and the host-side glue of kernels/. What it cannot: real memory races, timing,
// occupancy, launch limits beyond the grid/block/shared-memory sizes checked in launch().
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace emu {

enum State { kReady, kWaitBlock, kWaitWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  State state = kReady;
  dim3 tid;
};

struct Block {
  std::vector<Fiber> fibers;
  int n = 0;
  dim3 bid, bdim, gdim;
  int current = -1;
  ucontext_t scheduler;
  double warp_slot[32][32];  // one exchange slot per lane of each of up to 32 warps
};

inline Block& blk() {
  static Block b;
  return b;
}
inline Fiber& cur() { return blk().fibers[blk().current]; }
inline int lane() { return int(cur().tid.x) % 32; }
inline int warp() { return int(cur().tid.x) / 32; }

[[noreturn]] inline void die(const char* msg) {
  std::fprintf(stderr, "CUDA emulator: %s (block %u,%u,%u)\n", msg, blk().bid.x, blk().bid.y,
               blk().bid.z);
  std::abort();
}

// Suspends the current fiber until the scheduler releases its barrier.
inline void yield(State s) {
  Block& b = blk();
  Fiber& f = b.fibers[b.current];
  f.state = s;
  swapcontext(&f.ctx, &b.scheduler);
}
inline void block_barrier() { yield(kWaitBlock); }
inline void warp_barrier() { yield(kWaitWarp); }

// Value of `v` held by lane `src` of the calling warp (every lane of the warp must call it).
template <typename T>
T shfl(T v, int src) {
  static_assert(sizeof(T) <= sizeof(double), "shuffle of a type wider than 8 bytes");
  double* slot = blk().warp_slot[warp()];
  double packed = 0;
  std::memcpy(&packed, &v, sizeof(T));
  slot[lane()] = packed;
  warp_barrier();
  double got = slot[src & 31];
  warp_barrier();
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

inline unsigned char* dyn_smem_raw() {
  alignas(256) static unsigned char buf[228 * 1024];
  return buf;
}
template <typename T>
T* dyn_smem() {
  return reinterpret_cast<T*>(dyn_smem_raw());
}

inline std::function<void()>*& block_body() {
  static std::function<void()>* body = nullptr;
  return body;
}
inline void fiber_main() {
  (*block_body())();
  yield(kDone);
}

// Releases a warp whose live lanes all wait at a shuffle; returns whether one was released.
inline bool release_warps(Block& b, bool progressed) {
  bool released = false;
  for (int lo = 0; lo < b.n; lo += 32) {
    const int hi = std::min(b.n, lo + 32);
    int waiting = 0, ready = 0;
    for (int i = lo; i < hi; ++i) {
      waiting += b.fibers[i].state == kWaitWarp;
      ready += b.fibers[i].state == kReady;
    }
    if (waiting == 0) continue;
    if (waiting == hi - lo) {
      for (int i = lo; i < hi; ++i) b.fibers[i].state = kReady;
      released = true;
    } else if (ready == 0 && !progressed) {
      die("divergent warp shuffle/WMMA: some lanes exited or wait at __syncthreads");
    }
  }
  return released;
}

// Runs every thread of the current block to completion.
inline void run_block(std::function<void()>& body) {
  Block& b = blk();
  constexpr size_t kStack = 96 * 1024;
  static std::vector<std::vector<char>> stacks;
  if (int(stacks.size()) < b.n) stacks.resize(size_t(b.n), std::vector<char>(kStack));
  b.fibers.assign(size_t(b.n), Fiber{});
  block_body() = &body;
  for (int i = 0; i < b.n; ++i) {
    Fiber& f = b.fibers[i];
    f.tid = dim3(i % b.bdim.x, (i / b.bdim.x) % b.bdim.y, i / (b.bdim.x * b.bdim.y));
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks[i].data();
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (;;) {
    bool progressed = false;
    for (int i = 0; i < b.n; ++i) {
      if (b.fibers[i].state != kReady) continue;
      b.current = i;
      swapcontext(&b.scheduler, &b.fibers[i].ctx);
      progressed = true;
    }
    int done = 0, at_block_barrier = 0;
    for (const Fiber& f : b.fibers) {
      done += f.state == kDone;
      at_block_barrier += f.state == kWaitBlock;
    }
    if (done == b.n) return;
    bool released = release_warps(b, progressed);
    if (!released && at_block_barrier > 0 && at_block_barrier + done == b.n) {
      if (done > 0) die("__syncthreads reached after other threads of the block exited");
      for (Fiber& f : b.fibers) f.state = kReady;
      released = true;
    }
    if (!released && !progressed) die("deadlock: a barrier that not every thread reaches");
  }
}

// The <<<grid, block, shared, stream>>> configuration of one launch.
struct Cfg {
  dim3 grid, block;
  size_t smem = 0;
  Cfg(dim3 g, dim3 bk, size_t s = 0, void* = nullptr) : grid(g), block(bk), smem(s) {}
};

// kernel<<<cfg>>>(args...): every block in turn, every thread a fiber.
template <typename K, typename... A>
void launch(Cfg cfg, K kernel, A... args) {
  const unsigned threads = cfg.block.x * cfg.block.y * cfg.block.z;
  if (threads == 0 || threads > 1024 || threads > 32 * 32) die("invalid block size");
  if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 || cfg.grid.y > 65535 ||
      cfg.grid.z > 65535)
    die("invalid grid size");
  if (cfg.smem > 227 * 1024) die("dynamic shared memory above the 227 KiB of sm_90");
  Block& b = blk();
  b.bdim = cfg.block;
  b.gdim = cfg.grid;
  b.n = int(threads);
  std::function<void()> body = [&]() { kernel(args...); };
  for (unsigned z = 0; z < cfg.grid.z; ++z)
    for (unsigned y = 0; y < cfg.grid.y; ++y)
      for (unsigned x = 0; x < cfg.grid.x; ++x) {
        b.bid = dim3(x, y, z);
        float* smem = dyn_smem<float>();
        for (size_t i = 0; i < cfg.smem / sizeof(float); ++i) smem[i] = std::nanf("");
        run_block(body);
      }
}

}  // namespace emu

#define threadIdx (emu::cur().tid)
#define blockIdx (emu::blk().bid)
#define blockDim (emu::blk().bdim)
#define gridDim (emu::blk().gdim)
inline void __syncthreads() { emu::block_barrier(); }
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return emu::shfl(v, emu::lane() ^ mask);
}
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  return emu::shfl(v, src);
}
inline int atomicOr(int* p, int v) {  // one OS thread: a plain read-modify-write is atomic
  const int old = *p;
  *p |= v;
  return old;
}
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
