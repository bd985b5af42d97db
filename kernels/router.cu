// Router (fp32): softmax over all experts, top-k of (s + bias) with ties to the lower expert
// index, optional renormalisation of the gate weights; its backward; the top-k probability mass
// used by R_cp; the expert load and the auxiliary-loss-free bias update.
//
// One thread per token: E is small (<= a few hundred) and k <= 16, and a sequential scan in
// ascending expert order with a strict '>' comparison is exactly the tie rule of docs/model.md §1.6.
#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

constexpr int kMaxTopK = 16;

__global__ void router_forward_kernel(float* probs, int32_t* topk_idx, float* topk_weight,
                                      const float* logits, const float* bias, int64_t n, int e_n,
                                      int k, bool norm_topk) {
  int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* lr = logits + t * e_n;
  float* pr = probs + t * e_n;
  float mx = -INFINITY;
  for (int e = 0; e < e_n; ++e) mx = fmaxf(mx, lr[e]);
  float sum = 0.0f;
  for (int e = 0; e < e_n; ++e) sum += expf(lr[e] - mx);
  float inv = 1.0f / sum;
  for (int e = 0; e < e_n; ++e) pr[e] = expf(lr[e] - mx) * inv;
  int chosen[kMaxTopK];
  float chosen_sum = 0.0f;
  for (int s = 0; s < k; ++s) {
    int best = -1;
    float best_score = -INFINITY;
    for (int e = 0; e < e_n; ++e) {
      bool taken = false;
      for (int q = 0; q < s; ++q) taken |= chosen[q] == e;
      if (taken) continue;
      float score = pr[e] + (bias != nullptr ? bias[e] : 0.0f);
      if (best < 0 || score > best_score) {  // strict: equal scores keep the lower index
        best = e;
        best_score = score;
      }
    }
    chosen[s] = best;
    chosen_sum += pr[best];
  }
  for (int s = 0; s < k; ++s) {
    topk_idx[t * k + s] = chosen[s];
    float g = pr[chosen[s]];
    topk_weight[t * k + s] = norm_topk ? g / chosen_sum : g;
  }
}

// g_e = dprobs_e + (gate path); dlogits_e = s_e (g_e - sum_j s_j g_j).
// Gate path: without renorm, d w_s / d s_e = [e == e_s]. With renorm (w_s = s_{e_s} / S over the
// chosen set), d/ds_{e_r} of sum_s dw_s w_s = (dw_r - sum_s dw_s w_s) / S.
// An index outside [0, E) (the CPU rejects it in check_topk_idx) raises kErrExpertIndex and the
// token's row is zeroed: no read outside the token's probabilities.
__global__ void router_backward_kernel(float* dlogits, const float* dprobs, const float* dweight,
                                       const float* probs, const int32_t* topk_idx, int64_t n,
                                       int e_n, int k, bool norm_topk, int* error_flag) {
  int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* pr = probs + t * e_n;
  const int32_t* idx = topk_idx + t * k;
  const float* dw = dweight + t * k;
  for (int s = 0; s < k; ++s) {
    if (idx[s] < 0 || idx[s] >= e_n) {
      raise_device_error(error_flag, kErrExpertIndex);
      for (int e = 0; e < e_n; ++e) dlogits[t * e_n + e] = 0.0f;
      return;
    }
  }
  float gate[kMaxTopK];
  float chosen_sum = 0.0f, weighted = 0.0f;
  for (int s = 0; s < k; ++s) chosen_sum += pr[idx[s]];
  for (int s = 0; s < k; ++s) weighted += dw[s] * pr[idx[s]] / chosen_sum;
  for (int s = 0; s < k; ++s) gate[s] = norm_topk ? (dw[s] - weighted) / chosen_sum : dw[s];
  // dot = sum_j s_j g_j
  float dot = 0.0f;
  if (dprobs != nullptr)
    for (int e = 0; e < e_n; ++e) dot += pr[e] * dprobs[t * e_n + e];
  for (int s = 0; s < k; ++s) dot += pr[idx[s]] * gate[s];
  for (int e = 0; e < e_n; ++e) {
    float g = dprobs != nullptr ? dprobs[t * e_n + e] : 0.0f;
    for (int s = 0; s < k; ++s)
      if (idx[s] == e) g += gate[s];
    dlogits[t * e_n + e] = pr[e] * (g - dot);
  }
}

__global__ void topk_mass_forward_kernel(float* mass, const float* probs, const int32_t* idx,
                                         int64_t n, int e_n, int k, int* error_flag) {
  int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  float m = 0.0f;
  for (int s = 0; s < k; ++s) {
    int e = idx[t * k + s];
    if (e < 0 || e >= e_n) {
      raise_device_error(error_flag, kErrExpertIndex);
      continue;
    }
    m += probs[t * e_n + e];
  }
  mass[t] = m;
}

// Experts of one token are distinct, so each dprobs element has at most one writer.
__global__ void topk_mass_backward_kernel(float* dprobs, const float* dmass, const int32_t* idx,
                                          int64_t n, int e_n, int k, int* error_flag) {
  int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  for (int s = 0; s < k; ++s) {
    int e = idx[t * k + s];
    if (e >= 0 && e < e_n) {
      dprobs[t * e_n + e] += dmass[t];
    } else {
      raise_device_error(error_flag, kErrExpertIndex);
    }
  }
}

// load[e] += #(token, slot) pairs routed to e: one CTA per expert, integer block sum. An index
// outside [0, E) raises kErrExpertIndex (every CTA reads every index; the flag is an OR).
__global__ void expert_load_kernel(float* load, const int32_t* idx, int64_t pairs, int e_n,
                                   int* error_flag) {
  int e = blockIdx.x;
  int count = 0;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    count += idx[i] == e;
    bad |= idx[i] < 0 || idx[i] >= e_n;
  }
  if (bad) raise_device_error(error_flag, kErrExpertIndex);
  int total = block_sum_all<kBlock>(count);
  if (threadIdx.x == 0) load[e] += float(total);
}

// The mean in double, as on the CPU: loads are integer counts that can pass 2^24 over an update
// interval, where an f32 sum would round and could flip sign(mean - load) for a balanced expert.
__global__ void balance_bias_kernel(float* bias, const float* load, int e_n, float gamma) {
  __shared__ double mean;
  if (threadIdx.x == 0) {
    double sum = 0.0;
    for (int e = 0; e < e_n; ++e) sum += double(load[e]);
    mean = sum / double(e_n);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < e_n; e += blockDim.x) {
    double diff = mean - double(load[e]);
    float sign = diff > 0.0f ? 1.0f : (diff < 0.0f ? -1.0f : 0.0f);
    bias[e] += gamma * sign;
  }
}

void check_topk(const Tensor& topk_idx, int64_t n, const char* op) {
  MOE_CHECK(topk_idx.ndim() == 2 && topk_idx.dim(0) == n && topk_idx.dtype() == DType::kI32,
            "{}: topk_idx expected i32 [{}, k], found {} {}", op, n,
            dtype_name(topk_idx.dtype()), shape_str(topk_idx.shape()));
  MOE_CHECK(topk_idx.dim(1) >= 1 && topk_idx.dim(1) <= kMaxTopK,
            "{}: the CUDA router supports top-k in [1, {}], found {}", op, kMaxTopK,
            topk_idx.dim(1));
}

void check_f32(const Tensor& t, const char* op, const char* name) {
  MOE_CHECK(t.dtype() == DType::kF32, "{}: {} must be f32, found {}", op, name,
            dtype_name(t.dtype()));
}

}  // namespace

void CudaBackend::router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight,
                                 const Tensor& logits, const Tensor& bias, bool norm_topk) {
  MOE_CHECK(logits.ndim() == 2, "router_forward: logits expected [N, E], found {}",
            shape_str(logits.shape()));
  int64_t n = logits.dim(0), e_n = logits.dim(1);
  check_topk(topk_idx, n, "router_forward");
  int64_t k = topk_idx.dim(1);
  MOE_CHECK(k <= e_n, "router_forward: top-k {} exceeds the {} experts", k, e_n);
  check_shape(probs, logits.shape(), "router_forward: probs");
  check_shape(topk_weight, topk_idx.shape(), "router_forward: topk_weight");
  check_f32(logits, "router_forward", "logits");
  check_f32(probs, "router_forward", "probs");
  check_f32(topk_weight, "router_forward", "topk_weight");
  if (bias.defined()) {
    check_shape(bias, {e_n}, "router_forward: bias");
    check_f32(bias, "router_forward", "bias");
  }
  if (n == 0) return;
  router_forward_kernel<<<grid_cover(n, 128), 128, 0, stream_>>>(
      probs.ptr<float>(), topk_idx.ptr<int32_t>(), topk_weight.ptr<float>(), logits.ptr<float>(),
      bias.defined() ? bias.ptr<float>() : nullptr, n, int(e_n), int(k), norm_topk);
  MOE_LAUNCH_CHECK("router_forward_kernel");
  after_op("router_forward");
}

void CudaBackend::router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight,
                                  const Tensor& probs, const Tensor& topk_idx, bool norm_topk) {
  MOE_CHECK(probs.ndim() == 2, "router_backward: probs expected [N, E], found {}",
            shape_str(probs.shape()));
  int64_t n = probs.dim(0), e_n = probs.dim(1);
  check_topk(topk_idx, n, "router_backward");
  int64_t k = topk_idx.dim(1);
  check_shape(dlogits, probs.shape(), "router_backward: dlogits");
  check_shape(dweight, topk_idx.shape(), "router_backward: dweight");
  check_f32(dlogits, "router_backward", "dlogits");
  check_f32(dweight, "router_backward", "dweight");
  check_f32(probs, "router_backward", "probs");
  if (dprobs.defined()) {
    check_shape(dprobs, probs.shape(), "router_backward: dprobs");
    check_f32(dprobs, "router_backward", "dprobs");
  }
  if (n == 0) return;
  router_backward_kernel<<<grid_cover(n, 128), 128, 0, stream_>>>(
      dlogits.ptr<float>(), dprobs.defined() ? dprobs.ptr<float>() : nullptr,
      dweight.ptr<float>(), probs.ptr<float>(), topk_idx.ptr<int32_t>(), n, int(e_n), int(k),
      norm_topk, error_flag_);
  MOE_LAUNCH_CHECK("router_backward_kernel");
  after_op("router_backward");
}

void CudaBackend::topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) {
  MOE_CHECK(probs.ndim() == 2, "topk_mass_forward: probs expected [N, E], found {}",
            shape_str(probs.shape()));
  int64_t n = probs.dim(0);
  check_topk(topk_idx, n, "topk_mass_forward");
  check_shape(mass, {n}, "topk_mass_forward: mass");
  check_f32(mass, "topk_mass_forward", "mass");
  check_f32(probs, "topk_mass_forward", "probs");
  if (n == 0) return;
  topk_mass_forward_kernel<<<grid_cover(n), kBlock, 0, stream_>>>(
      mass.ptr<float>(), probs.ptr<float>(), topk_idx.ptr<int32_t>(), n, int(probs.dim(1)),
      int(topk_idx.dim(1)), error_flag_);
  MOE_LAUNCH_CHECK("topk_mass_forward_kernel");
  after_op("topk_mass_forward");
}

void CudaBackend::topk_mass_backward(Tensor& dprobs, const Tensor& dmass,
                                     const Tensor& topk_idx) {
  MOE_CHECK(dprobs.ndim() == 2, "topk_mass_backward: dprobs expected [N, E], found {}",
            shape_str(dprobs.shape()));
  int64_t n = dprobs.dim(0);
  check_topk(topk_idx, n, "topk_mass_backward");
  check_shape(dmass, {n}, "topk_mass_backward: dmass");
  check_f32(dprobs, "topk_mass_backward", "dprobs");
  check_f32(dmass, "topk_mass_backward", "dmass");
  if (n == 0) return;
  topk_mass_backward_kernel<<<grid_cover(n), kBlock, 0, stream_>>>(
      dprobs.ptr<float>(), dmass.ptr<float>(), topk_idx.ptr<int32_t>(), n, int(dprobs.dim(1)),
      int(topk_idx.dim(1)), error_flag_);
  MOE_LAUNCH_CHECK("topk_mass_backward_kernel");
  after_op("topk_mass_backward");
}

void CudaBackend::expert_load_accumulate(Tensor& load, const Tensor& topk_idx) {
  MOE_CHECK(load.ndim() == 1, "expert_load_accumulate: load expected [E], found {}",
            shape_str(load.shape()));
  check_f32(load, "expert_load_accumulate", "load");
  MOE_CHECK(topk_idx.dtype() == DType::kI32, "expert_load_accumulate: topk_idx must be i32");
  if (load.numel() == 0) return;
  expert_load_kernel<<<static_cast<unsigned>(load.numel()), kBlock, 0, stream_>>>(
      load.ptr<float>(), topk_idx.ptr<int32_t>(), topk_idx.numel(), int(load.numel()),
      error_flag_);
  MOE_LAUNCH_CHECK("expert_load_kernel");
  after_op("expert_load_accumulate");
}

void CudaBackend::balance_bias_update(Tensor& bias, const Tensor& load, float gamma) {
  MOE_CHECK(bias.ndim() == 1 && bias.numel() >= 1, "balance_bias_update: bias expected [E]");
  check_shape(load, bias.shape(), "balance_bias_update: load");
  check_f32(bias, "balance_bias_update", "bias");
  check_f32(load, "balance_bias_update", "load");
  balance_bias_kernel<<<1, kBlock, 0, stream_>>>(bias.ptr<float>(), load.ptr<float>(),
                                                 int(bias.numel()), gamma);
  MOE_LAUNCH_CHECK("balance_bias_kernel");
  after_op("balance_bias_update");
}

}  // namespace moe
