// Dispatch and combine: the stable counting sort of (token, slot) pairs by expert, the gather of
// token rows into dispatch order and the weighted scatter back, with their backward passes.
//
// The plan is three deterministic kernels: (1) one CTA per expert counts its pairs (integer block
// sum); (2) one thread scans the counts into expert_offsets; (3) one CTA per expert walks the
// pairs in (token, slot) order in chunks of 256, and an exclusive block scan of the "is mine"
// flags gives each pair its row, so rows of an expert keep token order, then slot order.
// Every gather/scatter below has one writer per output element and sums slots in slot order: no
// atomics at all.
#include <cub/block/block_scan.cuh>

#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

__global__ void count_pairs_kernel(int* counts, const int32_t* idx, int64_t pairs, int n_experts,
                                   int* error_flag) {
  const int e = blockIdx.x;
  int count = 0;
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    int32_t v = idx[i];
    count += v == e;
    if (e == 0 && (v < 0 || v >= n_experts)) raise_device_error(error_flag, kErrExpertIndex);
  }
  int total = block_sum_all<kBlock>(count);
  if (threadIdx.x == 0) counts[e] = total;
}

__global__ void scan_counts_kernel(int32_t* offsets, const int* counts, int n_experts) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int32_t acc = 0;
  offsets[0] = 0;
  for (int e = 0; e < n_experts; ++e) {
    acc += counts[e];
    offsets[e + 1] = acc;
  }
}

__global__ void scatter_rows_kernel(int32_t* row_token, int32_t* token_row, const int32_t* idx,
                                    const int32_t* offsets, int64_t pairs, int k) {
  using Scan = cub::BlockScan<int, kBlock>;
  __shared__ typename Scan::TempStorage temp;
  const int e = blockIdx.x;
  int next_row = offsets[e];
  for (int64_t base = 0; base < pairs; base += kBlock) {
    const int64_t i = base + threadIdx.x;
    const int mine = (i < pairs && idx[i] == e) ? 1 : 0;
    int pos = 0, chunk_total = 0;
    Scan(temp).ExclusiveSum(mine, pos, chunk_total);
    if (mine) {
      const int row = next_row + pos;
      row_token[row] = static_cast<int32_t>(i / k);
      token_row[i] = row;
    }
    next_row += chunk_total;
    __syncthreads();  // temp is reused by the next chunk
  }
}

template <typename T>
__global__ void permute_kernel(T* xp, const T* x, const int32_t* row_token, int64_t rows,
                               int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / d, c = i % d;
    xp[i] = x[int64_t(row_token[r]) * d + c];
  }
}

template <typename T>
__global__ void permute_backward_kernel(T* dx, const T* dxp, const int32_t* token_row, int64_t n,
                                        int k, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / d, c = i % d;
    float acc = 0.0f;
    for (int s = 0; s < k; ++s) acc += to_f(dxp[int64_t(token_row[t * k + s]) * d + c]);
    dx[i] = from_f<T>(acc);
  }
}

template <typename T>
__global__ void unpermute_kernel(T* y, const T* yp, const float* weight,
                                 const int32_t* token_row, int64_t n, int k, int64_t d,
                                 bool accumulate) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / d, c = i % d;
    float acc = accumulate ? to_f(y[i]) : 0.0f;
    for (int s = 0; s < k; ++s)
      acc += weight[t * k + s] * to_f(yp[int64_t(token_row[t * k + s]) * d + c]);
    y[i] = from_f<T>(acc);
  }
}

// dyp[row(t, s)] = w[t, s] * dy[t]; grid-stride over (pair, column).
template <typename T>
__global__ void unpermute_backward_rows_kernel(T* dyp, const T* dy, const float* weight,
                                               const int32_t* token_row, int64_t pairs, int k,
                                               int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t p = i / d, c = i % d, t = p / k;
    dyp[int64_t(token_row[p]) * d + c] = from_f<T>(weight[p] * to_f(dy[t * d + c]));
  }
}

// dweight[t, s] = <dy[t], yp[row(t, s)]>: one warp per pair.
template <typename T>
__global__ void unpermute_backward_weight_kernel(float* dweight, const T* dy, const T* yp,
                                                 const int32_t* token_row, int64_t pairs, int k,
                                                 int64_t d) {
  int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  if (p >= pairs) return;  // whole warps exit together
  int lane = threadIdx.x % 32;
  const T* a = dy + (p / k) * d;
  const T* b = yp + int64_t(token_row[p]) * d;
  float acc = 0.0f;
  for (int64_t c = lane; c < d; c += 32) acc += to_f(a[c]) * to_f(b[c]);
  acc = warp_sum(acc);
  if (lane == 0) dweight[p] = acc;
}

void check_i32(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.dtype() == DType::kI32, "{}: {} must be i32, found {}", op, name,
            dtype_name(t.dtype()));
}

struct RouteDims {
  int64_t n, k, d;
};

// token_row [N, k]; a: [N, d] token-side tensor; b: [N*k, d] dispatch-side tensor.
RouteDims route_dims(const Tensor& token_row, const Tensor& a, const Tensor& b, const char* op) {
  MOE_CHECK(token_row.ndim() == 2, "{}: token_row expected [N, k], found {}", op,
            shape_str(token_row.shape()));
  check_i32(token_row, op, "token_row");
  RouteDims r{token_row.dim(0), token_row.dim(1), a.ndim() == 2 ? a.dim(1) : -1};
  check_shape(a, {r.n, r.d}, op);
  check_shape(b, {r.n * r.k, r.d}, op);
  MOE_CHECK(a.dtype() == b.dtype(), "{}: token-side and dispatch-side tensors must share a "
            "dtype, found {} {}", op, dtype_name(a.dtype()), dtype_name(b.dtype()));
  return r;
}

}  // namespace

void CudaBackend::moe_dispatch_plan(Tensor& expert_offsets, Tensor& row_token, Tensor& token_row,
                                    const Tensor& topk_idx, int64_t n_experts) {
  MOE_CHECK(topk_idx.ndim() == 2, "moe_dispatch_plan: topk_idx expected [N, k], found {}",
            shape_str(topk_idx.shape()));
  int64_t pairs = topk_idx.numel(), k = topk_idx.dim(1);
  MOE_CHECK(n_experts >= 1, "moe_dispatch_plan: n_experts must be >= 1, found {}", n_experts);
  MOE_CHECK(pairs < (int64_t(1) << 31), "moe_dispatch_plan: {} pairs exceed i32 rows", pairs);
  check_shape(expert_offsets, {n_experts + 1}, "moe_dispatch_plan: expert_offsets");
  check_shape(row_token, {pairs}, "moe_dispatch_plan: row_token");
  check_shape(token_row, topk_idx.shape(), "moe_dispatch_plan: token_row");
  for (const Tensor* t : {&expert_offsets, &row_token, &token_row})
    check_i32(*t, "moe_dispatch_plan", "outputs");
  check_i32(topk_idx, "moe_dispatch_plan", "topk_idx");
  int* counts = static_cast<int*>(scratch(kScratchA, sizeof(int) * n_experts));
  unsigned experts = static_cast<unsigned>(n_experts);
  count_pairs_kernel<<<experts, kBlock, 0, stream_>>>(counts, topk_idx.ptr<int32_t>(), pairs,
                                                      int(n_experts), error_flag_);
  MOE_LAUNCH_CHECK("count_pairs_kernel");
  scan_counts_kernel<<<1, 32, 0, stream_>>>(expert_offsets.ptr<int32_t>(), counts,
                                            int(n_experts));
  MOE_LAUNCH_CHECK("scan_counts_kernel");
  if (pairs > 0) {
    scatter_rows_kernel<<<experts, kBlock, 0, stream_>>>(
        row_token.ptr<int32_t>(), token_row.ptr<int32_t>(), topk_idx.ptr<int32_t>(),
        expert_offsets.ptr<int32_t>(), pairs, int(k));
    MOE_LAUNCH_CHECK("scatter_rows_kernel");
  }
  after_op("moe_dispatch_plan");
}

void CudaBackend::moe_permute(Tensor& xp, const Tensor& x, const Tensor& row_token) {
  MOE_CHECK(x.ndim() == 2 && xp.ndim() == 2 && xp.dim(1) == x.dim(1) &&
                row_token.numel() == xp.dim(0) && xp.dtype() == x.dtype(),
            "moe_permute: expected xp [R, d] of x's dtype and row_token [R], found xp {} {} x "
            "{} {} row_token {}", dtype_name(xp.dtype()), shape_str(xp.shape()),
            dtype_name(x.dtype()), shape_str(x.shape()), shape_str(row_token.shape()));
  check_i32(row_token, "moe_permute", "row_token");
  int64_t rows = xp.dim(0), d = xp.dim(1);
  if (rows * d == 0) return;
  MOE_DISPATCH_ACT(x.dtype(), "moe_permute", T, {
    permute_kernel<T><<<grid_for(rows * d), kBlock, 0, stream_>>>(
        static_cast<T*>(xp.data()), static_cast<const T*>(x.data()), row_token.ptr<int32_t>(),
        rows, d);
    MOE_LAUNCH_CHECK("permute_kernel");
  });
  after_op("moe_permute");
}

void CudaBackend::moe_permute_backward(Tensor& dx, const Tensor& dxp, const Tensor& token_row) {
  RouteDims r = route_dims(token_row, dx, dxp, "moe_permute_backward");
  if (r.n * r.d == 0) return;
  MOE_DISPATCH_ACT(dx.dtype(), "moe_permute_backward", T, {
    permute_backward_kernel<T><<<grid_for(r.n * r.d), kBlock, 0, stream_>>>(
        static_cast<T*>(dx.data()), static_cast<const T*>(dxp.data()), token_row.ptr<int32_t>(),
        r.n, int(r.k), r.d);
    MOE_LAUNCH_CHECK("permute_backward_kernel");
  });
  after_op("moe_permute_backward");
}

void CudaBackend::moe_unpermute(Tensor& y, const Tensor& yp, const Tensor& topk_weight,
                                const Tensor& token_row, bool accumulate) {
  RouteDims r = route_dims(token_row, y, yp, "moe_unpermute");
  check_shape(topk_weight, token_row.shape(), "moe_unpermute: topk_weight");
  MOE_CHECK(topk_weight.dtype() == DType::kF32, "moe_unpermute: topk_weight must be f32");
  if (r.n * r.d == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "moe_unpermute", T, {
    unpermute_kernel<T><<<grid_for(r.n * r.d), kBlock, 0, stream_>>>(
        static_cast<T*>(y.data()), static_cast<const T*>(yp.data()), topk_weight.ptr<float>(),
        token_row.ptr<int32_t>(), r.n, int(r.k), r.d, accumulate);
    MOE_LAUNCH_CHECK("unpermute_kernel");
  });
  after_op("moe_unpermute");
}

void CudaBackend::moe_unpermute_backward(Tensor& dyp, Tensor& dweight, const Tensor& dy,
                                         const Tensor& yp, const Tensor& topk_weight,
                                         const Tensor& token_row) {
  RouteDims r = route_dims(token_row, dy, yp, "moe_unpermute_backward");
  check_shape(dyp, yp.shape(), "moe_unpermute_backward: dyp");
  check_shape(topk_weight, token_row.shape(), "moe_unpermute_backward: topk_weight");
  check_shape(dweight, token_row.shape(), "moe_unpermute_backward: dweight");
  MOE_CHECK(dyp.dtype() == yp.dtype() && topk_weight.dtype() == DType::kF32 &&
                dweight.dtype() == DType::kF32,
            "moe_unpermute_backward: dyp must match yp and the weights be f32");
  int64_t pairs = r.n * r.k;
  if (pairs == 0) return;
  MOE_DISPATCH_ACT(dy.dtype(), "moe_unpermute_backward", T, {
    if (r.d > 0) {
      unpermute_backward_rows_kernel<T><<<grid_for(pairs * r.d), kBlock, 0, stream_>>>(
          static_cast<T*>(dyp.data()), static_cast<const T*>(dy.data()),
          topk_weight.ptr<float>(), token_row.ptr<int32_t>(), pairs, int(r.k), r.d);
      MOE_LAUNCH_CHECK("unpermute_backward_rows_kernel");
    }
    unpermute_backward_weight_kernel<T>
        <<<static_cast<unsigned>(ceil_div(pairs * 32, kBlock)), kBlock, 0, stream_>>>(
            dweight.ptr<float>(), static_cast<const T*>(dy.data()),
            static_cast<const T*>(yp.data()), token_row.ptr<int32_t>(), pairs, int(r.k), r.d);
    MOE_LAUNCH_CHECK("unpermute_backward_weight_kernel");
  });
  after_op("moe_unpermute_backward");
}

}  // namespace moe
