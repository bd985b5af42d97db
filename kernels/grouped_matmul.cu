// Grouped expert GEMM: rows [off[e], off[e+1]) of x are multiplied by w[e].
//
// The expert offsets stay on the device: no host loop over experts and no synchronisation. One
// launch covers every expert. For the forward pass and dx, CTAs enumerate row tiles of all
// experts in order (expert e owns ceil(count_e / BM) tiles; the grid is sized for the worst case
// ceil(R / BM) + E and surplus CTAs exit). For dw, blockIdx.z is the expert and each CTA reduces
// over that expert's rows in a fixed order (deterministic, no atomics).
//
// All three products are one tiled kernel over strided operands, C(i, j) = sum_p A(i, p) B(p, j):
//   forward  y[r, n]     = sum_k x[r, k]  w[e, n, k]   A = x rows,   B = w[e]^T
//   dx       dx[r, k]    = sum_n dy[r, n] w[e, n, k]   A = dy rows,  B = w[e]
//   dw       dw[e, n, k] += sum_r dy[r, n] x[r, k]     A = dy^T,     B = x rows
// bf16 operands use tensor cores through WMMA (16x16x16, fp32 accumulation); f32 operands use an
// fp32 SIMT tile (exact fp32 products, to match the CPU reference). dx may be f32 with bf16
// operands (the model keeps the expert-path dz in f32 so the sp gradient is added before any
// bf16 rounding: issue 17); the fp32 accumulator is then stored unrounded.
#include <mma.h>

#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32;
constexpr int kGemmThreads = 128;  // 4 warps

// A strided matrix operand: element (i, p) at base[i * s0 + p * s1].
template <typename T> struct Operand {
  const T* base;
  int64_t s0, s1;
};

// Loads a kRows x kCols tile (origin r0, c0; valid extents rows_valid, cols_valid; zero outside)
// into shared memory laid out row-major with leading dimension ld, converting to S.
template <int kRows, int kCols, typename S, typename T>
__device__ void load_tile(S* dst, int ld, Operand<T> op, int r0, int c0, int rows_valid,
                          int cols_valid) {
  // Walk the contiguous dimension of the source with consecutive threads (coalescing).
  bool cols_contiguous = op.s1 == 1;
  for (int l = threadIdx.x; l < kRows * kCols; l += blockDim.x) {
    int r = cols_contiguous ? l / kCols : l % kRows;
    int c = cols_contiguous ? l % kCols : l / kRows;
    int gr = r0 + r, gc = c0 + c;
    float v = 0.0f;
    if (gr < rows_valid && gc < cols_valid) v = to_f(op.base[gr * op.s0 + gc * op.s1]);
    dst[r * ld + c] = from_f<S>(v);
  }
}

// Writes the fp32 tile `acc` (row-major, ld kBN) to C, adding the old value when accumulate.
template <typename TC>
__device__ void store_tile(const float* acc, TC* c, int64_t ldc, int m0, int n0, int m_valid,
                           int n_valid, bool accumulate) {
  for (int l = threadIdx.x; l < kBM * kBN; l += blockDim.x) {
    int i = l / kBN, j = l % kBN;
    int gi = m0 + i, gj = n0 + j;
    if (gi < m_valid && gj < n_valid) {
      TC* dst = c + gi * ldc + gj;
      float v = acc[l];
      *dst = from_f<TC>(accumulate ? to_f(*dst) + v : v);
    }
  }
}

// Shared memory of one CTA: A and B tiles, and the fp32 output tile.
template <typename S> struct alignas(32) TileSmem {
  S a[kBM][kBK + 8];  // padding keeps WMMA loads aligned (ld multiple of 8) and spreads banks
  S b[kBK][kBN + 8];
  float c[kBM][kBN];
};

// C tile = A[m0:m0+BM, :P] * B[:P, n0:n0+BN] with fp32 accumulation, result in smem.c.
// bf16: WMMA on tensor cores. f32: SIMT, each thread owns a 4x8 block of the tile.
template <typename T>
__device__ void compute_tile(TileSmem<T>& sm, Operand<T> a, Operand<T> b, int m0, int n0, int m,
                             int n, int p) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    using namespace nvcuda;
    int warp = threadIdx.x / 32;
    int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
    for (int x = 0; x < 2; ++x)
      for (int y = 0; y < 2; ++y) wmma::fill_fragment(acc[x][y], 0.0f);
    for (int p0 = 0; p0 < p; p0 += kBK) {
      load_tile<kBM, kBK>(&sm.a[0][0], kBK + 8, a, m0, p0, m, p);
      load_tile<kBK, kBN>(&sm.b[0][0], kBN + 8, b, p0, n0, p, n);
      __syncthreads();
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
        for (int x = 0; x < 2; ++x) wmma::load_matrix_sync(fa[x], &sm.a[wm + 16 * x][kk], kBK + 8);
        for (int y = 0; y < 2; ++y) wmma::load_matrix_sync(fb[y], &sm.b[kk][wn + 16 * y], kBN + 8);
        for (int x = 0; x < 2; ++x)
          for (int y = 0; y < 2; ++y) wmma::mma_sync(acc[x][y], fa[x], fb[y], acc[x][y]);
      }
      __syncthreads();
    }
    for (int x = 0; x < 2; ++x)
      for (int y = 0; y < 2; ++y)
        wmma::store_matrix_sync(&sm.c[wm + 16 * x][wn + 16 * y], acc[x][y], kBN,
                                wmma::mem_row_major);
    __syncthreads();
  } else {
    // 128 threads as 16 x 8: thread (ty, tx) owns rows ty + 16*i (i < 4), cols tx + 8*j (j < 8).
    int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
    float acc[4][8] = {};
    for (int p0 = 0; p0 < p; p0 += kBK) {
      load_tile<kBM, kBK>(&sm.a[0][0], kBK + 8, a, m0, p0, m, p);
      load_tile<kBK, kBN>(&sm.b[0][0], kBN + 8, b, p0, n0, p, n);
      __syncthreads();
      for (int kk = 0; kk < kBK; ++kk) {
        float av[4], bv[8];
        for (int i = 0; i < 4; ++i) av[i] = sm.a[ty + 16 * i][kk];
        for (int j = 0; j < 8; ++j) bv[j] = sm.b[kk][tx + 8 * j];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 8; ++j) sm.c[ty + 16 * i][tx + 8 * j] = acc[i][j];
    __syncthreads();
  }
}

// Finds the expert and row tile of this CTA's linear row-tile index; returns false if surplus.
__device__ bool locate_row_tile(const int32_t* offsets, int n_experts, int tile, int* expert,
                                int* row0, int* rows) {
  __shared__ int s_expert, s_row0, s_rows;
  if (threadIdx.x == 0) {
    s_expert = -1;
    int seen = 0;
    for (int e = 0; e < n_experts; ++e) {
      int count = offsets[e + 1] - offsets[e];
      int tiles = ceil_div_i(count, kBM);
      if (tile < seen + tiles) {
        s_expert = e;
        s_row0 = offsets[e] + (tile - seen) * kBM;
        s_rows = count - (tile - seen) * kBM;
        break;
      }
      seen += tiles;
    }
  }
  __syncthreads();
  *expert = s_expert;
  *row0 = s_row0;
  *rows = s_rows < kBM ? s_rows : kBM;
  return s_expert >= 0;
}

// Forward (kForward) or dx: C rows follow the dispatched rows of each expert.
//   forward: A = x [R, K] rows, B(p=k, j=n) = w[e][n][k]; C = y [R, N]
//   dx:      A = dy [R, N] rows, B(p=n, j=k) = w[e][n][k]; C = dx [R, K]
template <typename T, typename TC, bool kForward>
__global__ void __launch_bounds__(kGemmThreads)
    grouped_rows_kernel(TC* c, const T* a, const T* w, const int32_t* offsets, int n_experts,
                        int n_out, int k_in) {
  __shared__ TileSmem<T> sm;
  int expert, row0, rows;
  if (!locate_row_tile(offsets, n_experts, blockIdx.x, &expert, &row0, &rows)) return;
  const T* we = w + int64_t(expert) * n_out * k_in;
  int cols = kForward ? n_out : k_in;   // width of C
  int inner = kForward ? k_in : n_out;  // reduction length
  Operand<T> op_a{a + int64_t(row0) * inner, inner, 1};
  Operand<T> op_b = kForward ? Operand<T>{we, 1, k_in} : Operand<T>{we, k_in, 1};
  int n0 = blockIdx.y * kBN;
  compute_tile(sm, op_a, op_b, 0, n0, rows, cols, inner);
  store_tile(&sm.c[0][0], c + int64_t(row0) * cols, cols, 0, n0, rows, cols, false);
}

// dw[e] += dy[rows of e]^T x[rows of e]: C(i=n, j=k), reduction over the expert's rows.
template <typename T, typename TW>
__global__ void __launch_bounds__(kGemmThreads)
    grouped_dw_kernel(TW* dw, const T* dy, const T* x, const int32_t* offsets, int n_out,
                      int k_in) {
  __shared__ TileSmem<T> sm;
  int e = blockIdx.z;
  int r0 = offsets[e], count = offsets[e + 1] - r0;
  if (count <= 0) return;  // no tokens: the gradient of w[e] is unchanged
  Operand<T> op_a{dy + int64_t(r0) * n_out, 1, n_out};  // A(i=n, p=r) = dy[r0 + r][n]
  Operand<T> op_b{x + int64_t(r0) * k_in, k_in, 1};     // B(p=r, j=k) = x[r0 + r][k]
  int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  compute_tile(sm, op_a, op_b, m0, n0, n_out, k_in, count);
  store_tile(&sm.c[0][0], dw + int64_t(e) * n_out * k_in, k_in, m0, n0, n_out, k_in, true);
}

struct GroupedDims {
  int64_t rows, experts, n_out, k_in;
};

GroupedDims grouped_dims(const Tensor& x, const Tensor& w, const Tensor& offsets,
                         const char* op) {
  MOE_CHECK(w.ndim() == 3, "{}: w expected [E, N, K], found {}", op, shape_str(w.shape()));
  GroupedDims d{x.ndim() >= 1 ? x.dim(0) : 0, w.dim(0), w.dim(1), w.dim(2)};
  check_shape(x, {d.rows, d.k_in}, op);
  check_shape(offsets, {d.experts + 1}, op);
  MOE_CHECK(offsets.dtype() == DType::kI32, "{}: expert_offsets must be i32, found {}", op,
            dtype_name(offsets.dtype()));
  MOE_CHECK(d.rows < (int64_t(1) << 31) && d.n_out * d.k_in < (int64_t(1) << 31),
            "{}: sizes exceed the 32-bit indexing of the grouped GEMM", op);
  return d;
}

dim3 row_tile_grid(const GroupedDims& d, int64_t cols) {
  return dim3(static_cast<unsigned>(ceil_div(d.rows, kBM) + d.experts),
              static_cast<unsigned>(ceil_div(cols, kBN)));
}

}  // namespace

void CudaBackend::grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w,
                                         const Tensor& expert_offsets) {
  GroupedDims d = grouped_dims(x, w, expert_offsets, "grouped_matmul_forward");
  check_shape(y, {d.rows, d.n_out}, "grouped_matmul_forward: y");
  MOE_CHECK(x.dtype() == w.dtype() && y.dtype() == x.dtype(),
            "grouped_matmul_forward: y, x and w must share a dtype, found {} {} {}",
            dtype_name(y.dtype()), dtype_name(x.dtype()), dtype_name(w.dtype()));
  if (d.rows == 0 || d.n_out == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), "grouped_matmul_forward", T, {
    grouped_rows_kernel<T, T, true><<<row_tile_grid(d, d.n_out), kGemmThreads, 0, stream_>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(x.data()),
        static_cast<const T*>(w.data()), expert_offsets.ptr<int32_t>(), int(d.experts),
        int(d.n_out), int(d.k_in));
    MOE_LAUNCH_CHECK("grouped_rows_kernel<forward>");
  });
  after_op("grouped_matmul_forward");
}

void CudaBackend::grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy,
                                          const Tensor& x, const Tensor& w,
                                          const Tensor& expert_offsets) {
  GroupedDims d = grouped_dims(x, w, expert_offsets, "grouped_matmul_backward");
  check_shape(dy, {d.rows, d.n_out}, "grouped_matmul_backward: dy");
  MOE_CHECK(x.dtype() == w.dtype() && dy.dtype() == x.dtype(),
            "grouped_matmul_backward: dy, x and w must share a dtype, found {} {} {}",
            dtype_name(dy.dtype()), dtype_name(x.dtype()), dtype_name(w.dtype()));
  if (dx.defined()) {
    check_shape(dx, {d.rows, d.k_in}, "grouped_matmul_backward: dx");
    const bool dx_f32 = dx.dtype() == DType::kF32;
    MOE_CHECK(dx.dtype() == x.dtype() || dx_f32,
              "grouped_matmul_backward: dx must be {} or f32, found {}", dtype_name(x.dtype()),
              dtype_name(dx.dtype()));
    if (d.rows > 0 && d.k_in > 0) {
      MOE_DISPATCH_ACT(x.dtype(), "grouped_matmul_backward", T, {
        auto launch = [&](auto* out) {
          using TC = std::remove_pointer_t<decltype(out)>;
          grouped_rows_kernel<T, TC, false><<<row_tile_grid(d, d.k_in), kGemmThreads, 0,
                                              stream_>>>(
              out, static_cast<const T*>(dy.data()), static_cast<const T*>(w.data()),
              expert_offsets.ptr<int32_t>(), int(d.experts), int(d.n_out), int(d.k_in));
          MOE_LAUNCH_CHECK("grouped_rows_kernel<dx>");
        };
        if (dx_f32) {
          launch(dx.ptr<float>());
        } else {
          launch(static_cast<T*>(dx.data()));
        }
      });
    }
  }
  if (dw.defined()) {
    check_shape(dw, w.shape(), "grouped_matmul_backward: dw");
    MOE_CHECK(dw.dtype() == DType::kF32, "grouped_matmul_backward: dw must be f32, found {}",
              dtype_name(dw.dtype()));
    if (d.experts > 0 && d.n_out > 0 && d.k_in > 0) {
      dim3 grid(static_cast<unsigned>(ceil_div(d.n_out, kBM)),
                static_cast<unsigned>(ceil_div(d.k_in, kBN)), static_cast<unsigned>(d.experts));
      MOE_DISPATCH_ACT(x.dtype(), "grouped_matmul_backward", T, {
        grouped_dw_kernel<T, float><<<grid, kGemmThreads, 0, stream_>>>(
            dw.ptr<float>(), static_cast<const T*>(dy.data()), static_cast<const T*>(x.data()),
            expert_offsets.ptr<int32_t>(), int(d.n_out), int(d.k_in));
        MOE_LAUNCH_CHECK("grouped_dw_kernel");
      });
    }
  }
  after_op("grouped_matmul_backward");
}

}  // namespace moe
