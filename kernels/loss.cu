// Cross-entropy over the vocabulary and the auxiliary losses of docs/model.md §2 (lb, z, sp, cp) with
// their backward passes.
//
// Cross-entropy streams each logits row (bf16 or f32) through registers in one pass with an
// online max / sum-exp per thread, then combines threads with fixed-order block reductions: no
// fp32 copy of the logits is ever made. Scalar losses are produced by deterministic two-pass sums
// (common.cuh): per-token or per-expert terms, then one fixed-order total. Backward passes of the
// losses ADD coef * dL/dinput into the shared gradient buffers; each element has one writer.
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

constexpr int kCeThreads = 256;
constexpr int kMaxSpTopK = 16;

template <typename T>
__global__ void __launch_bounds__(kCeThreads)
    cross_entropy_forward_kernel(float* loss, float* lse_out, const T* logits,
                                 const int32_t* targets, int64_t vocab, int* error_flag) {
  const int64_t t = blockIdx.x;
  const T* row = logits + t * vocab;
  float m = -INFINITY, s = 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    float x = to_f(row[v]);
    if (x > m) {
      s = s * expf(m - x) + 1.0f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  const float row_max = block_max_all<kCeThreads>(m);
  const float scaled = m == -INFINITY ? 0.0f : s * expf(m - row_max);
  const float total = block_sum_all<kCeThreads>(scaled);
  if (threadIdx.x == 0) {
    const float lse = row_max + logf(total);
    lse_out[t] = lse;
    const int32_t target = targets[t];
    if (target >= vocab) raise_device_error(error_flag, kErrTarget);
    loss[t] = (target >= 0 && target < vocab) ? lse - to_f(row[target]) : 0.0f;
  }
}

template <typename T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const float* lse,
                                              const int32_t* targets, int64_t n, int64_t vocab,
                                              float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * vocab;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / vocab, v = i % vocab;
    const int32_t target = targets[t];
    float g = 0.0f;
    if (target >= 0 && target < vocab)
      g = (expf(to_f(logits[i]) - lse[t]) - (v == target ? 1.0f : 0.0f)) * scale;
    dlogits[i] = from_f<T>(g);
  }
}

// ---- lb ------------------------------------------------------------------------------------
// f[e] = count_e / (k N); term[e] = f_e * P_e with P_e = mean_t probs[t][e]. One CTA per expert.
// An index outside [0, E) raises kErrExpertIndex, as on the CPU (check_topk_idx), instead of
// silently dropping out of every count.
__global__ void lb_stats_kernel(float* f, double* term, const float* probs, const int32_t* idx,
                                int64_t n, int k, int n_experts, int* error_flag) {
  const int e = blockIdx.x;
  int count = 0;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < n * k; i += blockDim.x) {
    count += idx[i] == e;
    bad |= idx[i] < 0 || idx[i] >= n_experts;
  }
  if (bad) raise_device_error(error_flag, kErrExpertIndex);
  float psum = 0.0f;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) psum += probs[t * n_experts + e];
  const int total_count = block_sum_all<kBlock>(count);
  const float total_p = block_sum_all<kBlock>(psum);
  if (threadIdx.x == 0) {
    const double fe = double(total_count) / (double(k) * double(n));
    f[e] = float(fe);
    if (term != nullptr) term[e] = fe * double(total_p) / double(n);
  }
}

__global__ void lb_finish_kernel(float* loss, const double* term, int n_experts) {
  if (threadIdx.x != 0) return;
  double acc = 0.0;
  for (int e = 0; e < n_experts; ++e) acc += term[e];
  loss[0] = float(double(n_experts) * acc);
}

// dL/dprobs[t][e] = E f_e / N (the counts are constants).
__global__ void lb_backward_kernel(float* dprobs, const float* f, int64_t n, int n_experts,
                                   float coef) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * n_experts;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int e = int(i % n_experts);
    dprobs[i] += coef * float(n_experts) * f[e] / float(n);
  }
}

// ---- z -------------------------------------------------------------------------------------
__device__ float row_logsumexp(const float* row, int n_experts) {
  float m = -INFINITY;
  for (int e = 0; e < n_experts; ++e) m = fmaxf(m, row[e]);
  float s = 0.0f;
  for (int e = 0; e < n_experts; ++e) s += expf(row[e] - m);
  return m + logf(s);
}

struct ZLossTerm {
  const float* logits;
  int n_experts;
  __device__ double operator()(int64_t t) const {
    double l = row_logsumexp(logits + t * n_experts, n_experts);
    return l * l;
  }
};

// dL/dlogits[t][e] = (2 lse_t / N) softmax_t(e).
__global__ void z_backward_kernel(float* dlogits, const float* logits, int64_t n, int n_experts,
                                  float coef) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* row = logits + t * n_experts;
  const float lse = row_logsumexp(row, n_experts);
  const float g = coef * 2.0f * lse / float(n);
  for (int e = 0; e < n_experts; ++e) dlogits[t * n_experts + e] += g * expf(row[e] - lse);
}

// ---- sp ------------------------------------------------------------------------------------
// Per token (one warp): norms n_s = max(||z_s||, 1e-12) and cosines of the k dispatched rows.
template <typename T>
__device__ void sp_token_geometry(const T* z, const int32_t* rows, int k, int64_t f,
                                  float* nrm, bool* unclamped, float* cosm) {
  const int lane = threadIdx.x % 32;
  for (int s = 0; s < k; ++s) {
    const T* a = z + int64_t(rows[s]) * f;
    for (int q = s; q < k; ++q) {
      const T* b = z + int64_t(rows[q]) * f;
      float acc = 0.0f;
      for (int64_t c = lane; c < f; c += 32) acc += to_f(a[c]) * to_f(b[c]);
      cosm[s * kMaxSpTopK + q] = warp_sum(acc);  // raw dot products for now
    }
  }
  for (int s = 0; s < k; ++s) {
    const float norm = sqrtf(cosm[s * kMaxSpTopK + s]);
    unclamped[s] = norm > 1e-12f;
    nrm[s] = fmaxf(norm, 1e-12f);
  }
  for (int s = 0; s < k; ++s)
    for (int q = s + 1; q < k; ++q) {
      const float c = cosm[s * kMaxSpTopK + q] / (nrm[s] * nrm[q]);
      cosm[s * kMaxSpTopK + q] = c;
      cosm[q * kMaxSpTopK + s] = c;
    }
}

// term[t] = sum over ordered pairs s != s' of cos^2 = 2 sum_{s<s'} cos^2.
template <typename T>
__global__ void sp_forward_kernel(float* term, const T* z, const int32_t* token_row, int64_t n,
                                  int k, int64_t f) {
  const int64_t t = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  if (t >= n) return;  // whole warps
  float nrm[kMaxSpTopK], cosm[kMaxSpTopK * kMaxSpTopK];
  bool unclamped[kMaxSpTopK];
  sp_token_geometry(z, token_row + t * k, k, f, nrm, unclamped, cosm);
  float acc = 0.0f;
  for (int s = 0; s < k; ++s)
    for (int q = s + 1; q < k; ++q) acc += cosm[s * kMaxSpTopK + q] * cosm[s * kMaxSpTopK + q];
  if (threadIdx.x % 32 == 0) term[t] = 2.0f * acc;
}

struct ReadTerm {
  const float* term;
  __device__ double operator()(int64_t i) const { return term[i]; }
};

// dz_s += scale * (sum_{s'!=s} 4 c/(n_s n_s') z_s' - [unclamped_s] sum_{s'!=s} 4 c^2 / n_s^2 z_s)
// dz (TD) is f32 in the model's bf16 runs: the sp term is ~1e-3 of the main-path gradient, below
// half a bf16 unit, so adding it into a bf16 dz would round it away (issue 17).
template <typename T, typename TD>
__global__ void sp_backward_kernel(TD* dz, const T* z, const int32_t* token_row, int64_t n, int k,
                                   int64_t f, float scale) {
  const int64_t t = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  if (t >= n) return;
  const int lane = threadIdx.x % 32;
  const int32_t* rows = token_row + t * k;
  float nrm[kMaxSpTopK], cosm[kMaxSpTopK * kMaxSpTopK];
  bool unclamped[kMaxSpTopK];
  sp_token_geometry(z, rows, k, f, nrm, unclamped, cosm);
  for (int s = 0; s < k; ++s) {
    float self = 0.0f;
    for (int q = 0; q < k; ++q)
      if (q != s) self += 4.0f * cosm[s * kMaxSpTopK + q] * cosm[s * kMaxSpTopK + q];
    self = unclamped[s] ? self / (nrm[s] * nrm[s]) : 0.0f;
    TD* out = dz + int64_t(rows[s]) * f;
    const T* zs = z + int64_t(rows[s]) * f;
    for (int64_t c = lane; c < f; c += 32) {
      float g = -self * to_f(zs[c]);
      for (int q = 0; q < k; ++q)
        if (q != s)
          g += 4.0f * cosm[s * kMaxSpTopK + q] / (nrm[s] * nrm[q]) *
               to_f(z[int64_t(rows[q]) * f + c]);
      out[c] = from_f<TD>(to_f(out[c]) + scale * g);
    }
  }
}

// ---- cp ------------------------------------------------------------------------------------
struct CpTerm {
  const float* masses;
  int64_t n;
  int layers;
  __device__ double operator()(int64_t t) const {
    double acc = 0.0;
    for (int l = 0; l + 1 < layers; ++l)
      acc += double(masses[l * n + t]) * double(masses[(l + 1) * n + t]);
    return acc;
  }
};

__global__ void cp_backward_kernel(float* dmasses, const float* masses, int64_t n, int layers,
                                   float coef) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * layers;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int l = int(i / n);
    const int64_t t = i % n;
    float nb = 0.0f;
    if (l > 0) nb += masses[(l - 1) * n + t];
    if (l + 1 < layers) nb += masses[(l + 1) * n + t];
    dmasses[i] = -coef * nb / float(n);
  }
}

void check_f32(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.dtype() == DType::kF32, "{}: {} must be f32, found {}", op, name,
            dtype_name(t.dtype()));
}

void check_probs_topk(const Tensor& probs, const Tensor& topk_idx, const char* op) {
  MOE_CHECK(probs.ndim() == 2 && topk_idx.ndim() == 2 && topk_idx.dim(0) == probs.dim(0) &&
                topk_idx.dtype() == DType::kI32,
            "{}: expected probs [N, E] and i32 topk_idx [N, k], found {} and {} {}", op,
            shape_str(probs.shape()), dtype_name(topk_idx.dtype()), shape_str(topk_idx.shape()));
  check_f32(probs, op, "probs");
}

void check_sp(const Tensor& z, const Tensor& token_row, const char* op) {
  MOE_CHECK(z.ndim() == 2 && token_row.ndim() == 2 && token_row.dtype() == DType::kI32 &&
                token_row.numel() == z.dim(0),
            "{}: expected z [N*k, F] and i32 token_row [N, k], found {} and {} {}", op,
            shape_str(z.shape()), dtype_name(token_row.dtype()), shape_str(token_row.shape()));
  MOE_CHECK(token_row.dim(1) <= kMaxSpTopK, "{}: the CUDA sp loss supports k <= {}, found {}",
            op, kMaxSpTopK, token_row.dim(1));
}

}  // namespace

void CudaBackend::cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                                        const Tensor& targets) {
  MOE_CHECK(logits.ndim() == 2, "cross_entropy_forward: logits expected [N, V], found {}",
            shape_str(logits.shape()));
  int64_t n = logits.dim(0), vocab = logits.dim(1);
  check_shape(loss, {n}, "cross_entropy_forward: loss");
  check_shape(lse, {n}, "cross_entropy_forward: lse");
  check_shape(targets, {n}, "cross_entropy_forward: targets");
  check_f32(loss, "cross_entropy_forward", "loss");
  check_f32(lse, "cross_entropy_forward", "lse");
  MOE_CHECK(targets.dtype() == DType::kI32, "cross_entropy_forward: targets must be i32");
  if (n == 0) return;
  MOE_DISPATCH_ACT(logits.dtype(), "cross_entropy_forward", T, {
    cross_entropy_forward_kernel<T><<<static_cast<unsigned>(n), kCeThreads, 0, stream_>>>(
        loss.ptr<float>(), lse.ptr<float>(), static_cast<const T*>(logits.data()),
        targets.ptr<int32_t>(), vocab, error_flag_);
    MOE_LAUNCH_CHECK("cross_entropy_forward_kernel");
  });
  after_op("cross_entropy_forward");
}

void CudaBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                         const Tensor& lse, const Tensor& targets, float scale) {
  MOE_CHECK(logits.ndim() == 2, "cross_entropy_backward: logits expected [N, V], found {}",
            shape_str(logits.shape()));
  int64_t n = logits.dim(0), vocab = logits.dim(1);
  check_shape(dlogits, logits.shape(), "cross_entropy_backward: dlogits");
  check_shape(lse, {n}, "cross_entropy_backward: lse");
  check_shape(targets, {n}, "cross_entropy_backward: targets");
  check_f32(lse, "cross_entropy_backward", "lse");
  MOE_CHECK(dlogits.dtype() == logits.dtype() && targets.dtype() == DType::kI32,
            "cross_entropy_backward: dlogits must match logits ({}) and targets be i32",
            dtype_name(logits.dtype()));
  if (n * vocab == 0) return;
  MOE_DISPATCH_ACT(logits.dtype(), "cross_entropy_backward", T, {
    cross_entropy_backward_kernel<T><<<grid_for(n * vocab), kBlock, 0, stream_>>>(
        static_cast<T*>(dlogits.data()), static_cast<const T*>(logits.data()), lse.ptr<float>(),
        targets.ptr<int32_t>(), n, vocab, scale);
    MOE_LAUNCH_CHECK("cross_entropy_backward_kernel");
  });
  after_op("cross_entropy_backward");
}

void CudaBackend::lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) {
  check_probs_topk(probs, topk_idx, "lb_loss_forward");
  check_shape(loss, {1}, "lb_loss_forward: loss");
  check_f32(loss, "lb_loss_forward", "loss");
  int64_t n = probs.dim(0), e_n = probs.dim(1), k = topk_idx.dim(1);
  MOE_CHECK(n > 0 && e_n > 0, "lb_loss_forward: empty batch or no experts ({})",
            shape_str(probs.shape()));
  float* f = static_cast<float*>(scratch(kScratchA, sizeof(float) * e_n));
  double* term = static_cast<double*>(scratch(kScratchB, sizeof(double) * e_n));
  lb_stats_kernel<<<static_cast<unsigned>(e_n), kBlock, 0, stream_>>>(
      f, term, probs.ptr<float>(), topk_idx.ptr<int32_t>(), n, int(k), int(e_n), error_flag_);
  MOE_LAUNCH_CHECK("lb_stats_kernel");
  lb_finish_kernel<<<1, 32, 0, stream_>>>(loss.ptr<float>(), term, int(e_n));
  MOE_LAUNCH_CHECK("lb_finish_kernel");
  after_op("lb_loss_forward");
}

void CudaBackend::lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx,
                                   float coef) {
  check_probs_topk(probs, topk_idx, "lb_loss_backward");
  check_shape(dprobs, probs.shape(), "lb_loss_backward: dprobs");
  check_f32(dprobs, "lb_loss_backward", "dprobs");
  int64_t n = probs.dim(0), e_n = probs.dim(1), k = topk_idx.dim(1);
  if (n == 0 || e_n == 0) return;
  float* f = static_cast<float*>(scratch(kScratchA, sizeof(float) * e_n));
  lb_stats_kernel<<<static_cast<unsigned>(e_n), kBlock, 0, stream_>>>(
      f, nullptr, probs.ptr<float>(), topk_idx.ptr<int32_t>(), n, int(k), int(e_n),
      error_flag_);
  MOE_LAUNCH_CHECK("lb_stats_kernel");
  lb_backward_kernel<<<grid_for(n * e_n), kBlock, 0, stream_>>>(dprobs.ptr<float>(), f, n,
                                                                 int(e_n), coef);
  MOE_LAUNCH_CHECK("lb_backward_kernel");
  after_op("lb_loss_backward");
}

void CudaBackend::z_loss_forward(Tensor& loss, const Tensor& logits) {
  MOE_CHECK(logits.ndim() == 2 && logits.dim(0) > 0,
            "z_loss_forward: logits expected non-empty [N, E], found {}", shape_str(logits.shape()));
  check_f32(logits, "z_loss_forward", "logits");
  check_shape(loss, {1}, "z_loss_forward: loss");
  check_f32(loss, "z_loss_forward", "loss");
  int64_t n = logits.dim(0);
  deterministic_sum(stream_, n, ZLossTerm{logits.ptr<float>(), int(logits.dim(1))},
                    sum_partials(), loss.ptr<float>(), 1.0 / double(n), false);
  after_op("z_loss_forward");
}

void CudaBackend::z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) {
  MOE_CHECK(logits.ndim() == 2, "z_loss_backward: logits expected [N, E], found {}",
            shape_str(logits.shape()));
  check_shape(dlogits, logits.shape(), "z_loss_backward: dlogits");
  check_f32(logits, "z_loss_backward", "logits");
  check_f32(dlogits, "z_loss_backward", "dlogits");
  int64_t n = logits.dim(0);
  if (n == 0) return;
  z_backward_kernel<<<grid_cover(n, 128), 128, 0, stream_>>>(dlogits.ptr<float>(),
                                                           logits.ptr<float>(), n,
                                                           int(logits.dim(1)), coef);
  MOE_LAUNCH_CHECK("z_backward_kernel");
  after_op("z_loss_backward");
}

void CudaBackend::sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) {
  check_sp(z, token_row, "sp_loss_forward");
  check_shape(loss, {1}, "sp_loss_forward: loss");
  check_f32(loss, "sp_loss_forward", "loss");
  int64_t n = token_row.dim(0), k = token_row.dim(1), f = z.dim(1);
  MOE_CHECK(n > 0, "sp_loss_forward: empty batch");
  float* term = static_cast<float*>(scratch(kScratchA, sizeof(float) * n));
  MOE_DISPATCH_ACT(z.dtype(), "sp_loss_forward", T, {
    sp_forward_kernel<T><<<static_cast<unsigned>(ceil_div(n * 32, 128)), 128, 0, stream_>>>(
        term, static_cast<const T*>(z.data()), token_row.ptr<int32_t>(), n, int(k), f);
    MOE_LAUNCH_CHECK("sp_forward_kernel");
  });
  deterministic_sum(stream_, n, ReadTerm{term}, sum_partials(), loss.ptr<float>(),
                    1.0 / double(n), false);
  after_op("sp_loss_forward");
}

void CudaBackend::sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row,
                                   float coef) {
  check_sp(z, token_row, "sp_loss_backward");
  check_shape(dz, z.shape(), "sp_loss_backward: dz");
  MOE_CHECK(dz.dtype() == z.dtype() || dz.dtype() == DType::kF32,
            "sp_loss_backward: dz must be {} (as z) or f32, found {}", dtype_name(z.dtype()),
            dtype_name(dz.dtype()));
  int64_t n = token_row.dim(0), k = token_row.dim(1), f = z.dim(1);
  if (n == 0 || k < 2) return;  // no pairs: zero gradient
  MOE_DISPATCH_ACT(z.dtype(), "sp_loss_backward", T, {
    auto launch = [&](auto* out) {
      using TD = std::remove_pointer_t<decltype(out)>;
      sp_backward_kernel<T, TD><<<static_cast<unsigned>(ceil_div(n * 32, 128)), 128, 0,
                                  stream_>>>(out, static_cast<const T*>(z.data()),
                                             token_row.ptr<int32_t>(), n, int(k), f,
                                             coef / float(n));
      MOE_LAUNCH_CHECK("sp_backward_kernel");
    };
    if (dz.dtype() == DType::kF32) {
      launch(dz.ptr<float>());
    } else {
      launch(static_cast<T*>(dz.data()));
    }
  });
  after_op("sp_loss_backward");
}

void CudaBackend::cp_loss_forward(Tensor& loss, const Tensor& masses) {
  MOE_CHECK(masses.ndim() == 2 && masses.dim(1) > 0,
            "cp_loss_forward: masses expected [M, N] with N > 0, found {}",
            shape_str(masses.shape()));
  check_f32(masses, "cp_loss_forward", "masses");
  check_shape(loss, {1}, "cp_loss_forward: loss");
  check_f32(loss, "cp_loss_forward", "loss");
  int64_t layers = masses.dim(0), n = masses.dim(1);
  deterministic_sum(stream_, n, CpTerm{masses.ptr<float>(), n, int(layers)}, sum_partials(),
                    loss.ptr<float>(), -1.0 / double(n), false);
  after_op("cp_loss_forward");
}

void CudaBackend::cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) {
  MOE_CHECK(masses.ndim() == 2, "cp_loss_backward: masses expected [M, N], found {}",
            shape_str(masses.shape()));
  check_shape(dmasses, masses.shape(), "cp_loss_backward: dmasses");
  check_f32(masses, "cp_loss_backward", "masses");
  check_f32(dmasses, "cp_loss_backward", "dmasses");
  int64_t layers = masses.dim(0), n = masses.dim(1);
  if (n * layers == 0) return;
  cp_backward_kernel<<<grid_for(n * layers), kBlock, 0, stream_>>>(
      dmasses.ptr<float>(), masses.ptr<float>(), n, int(layers), coef);
  MOE_LAUNCH_CHECK("cp_backward_kernel");
  after_op("cp_loss_backward");
}

}  // namespace moe
