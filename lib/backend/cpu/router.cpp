// CPU router ops: softmax + top-k routing, its backward pass, the top-k probability mass (input
// of the cp loss), and the auxiliary-loss-free balancing bias (docs/model.md §1.6, §2.8 `balance: bias`).
//
// Decisions:
// - Top-k is a k-pass selection scan over the E scores, keeping the first maximum, so ties go to
//   the LOWER expert index (docs/model.md §1.6) and a NaN score can never break a sort's ordering contract.
// - The softmax runs in the tensor's own type (float in training, double in the gradient tests).
// - router_backward treats the selected set as constant and needs no scratch: the gate-path
//   gradient is non-zero only on the k selected experts, so the softmax-backward dot product is
//   split into its dense (dprobs) and sparse (gate) parts.
// - Index validation runs serially BEFORE each OpenMP loop: an exception must never leave a
//   parallel region.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/moe_op_checks.h"

namespace moe {
namespace {

using cpu::check_dtype;
using cpu::check_topk_idx;
using cpu::dispatch_float;

// Softmax of one row: probs[e] = exp(logits[e] - max) / sum, in the tensor's type.
template <typename T> void softmax_row(T* probs, const T* logits, int64_t n) {
  T max_logit = logits[0];
  for (int64_t e = 1; e < n; ++e) max_logit = std::max(max_logit, logits[e]);
  T sum = 0;
  for (int64_t e = 0; e < n; ++e) {
    probs[e] = std::exp(logits[e] - max_logit);
    sum += probs[e];
  }
  const T inv = T(1) / sum;
  for (int64_t e = 0; e < n; ++e) probs[e] *= inv;
}

// Writes the k experts of highest probs[e] + bias[e] into idx, in descending order of score;
// among equal scores the lower index comes first. `taken` is caller scratch of n_experts flags.
template <typename T>
void select_topk(int32_t* idx, const T* probs, const T* bias, int64_t n_experts, int64_t k,
                 std::vector<char>& taken) {
  std::fill(taken.begin(), taken.end(), 0);
  for (int64_t slot = 0; slot < k; ++slot) {
    int64_t best = -1;
    T best_score = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      if (taken[e]) continue;
      const T score = bias ? probs[e] + bias[e] : probs[e];
      if (best < 0 || score > best_score) {  // strict '>': an equal later score never wins
        best = e;
        best_score = score;
      }
    }
    taken[best] = 1;
    idx[slot] = static_cast<int32_t>(best);
  }
}

template <typename T>
void router_forward_impl(int threads, Tensor& probs, Tensor& topk_idx, Tensor& topk_weight,
                         const Tensor& logits, const Tensor& bias, bool norm_topk) {
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1), k = topk_idx.dim(1);
  T* s = probs.ptr<T>();
  int32_t* idx = topk_idx.ptr<int32_t>();
  T* weight = topk_weight.ptr<T>();
  const T* r = logits.ptr<T>();
  const T* b = bias.defined() ? bias.ptr<T>() : nullptr;
  const int n_threads = cpu::team(threads, n_tokens * n_experts);
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<char> taken(static_cast<size_t>(n_experts));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      T* s_t = s + t * n_experts;
      softmax_row(s_t, r + t * n_experts, n_experts);
      int32_t* idx_t = idx + t * k;
      select_topk(idx_t, s_t, b, n_experts, k, taken);
      T selected_sum = 0;
      for (int64_t j = 0; j < k; ++j) selected_sum += s_t[idx_t[j]];
      const T inv = norm_topk ? T(1) / selected_sum : T(1);
      for (int64_t j = 0; j < k; ++j) weight[t * k + j] = s_t[idx_t[j]] * inv;
    }
  }
}

// Gradient w.r.t. s is g = dprobs + gate path; dlogits = s * (g - <s, g>).
// Gate path: without norm, g[idx_j] += dw_j. With norm (w_j = s_j / S over the selected set),
// g[idx_i] += (dw_i - sum_j dw_j w_j) / S.
template <typename T>
void router_backward_impl(int threads, Tensor& dlogits, const Tensor& dprobs,
                          const Tensor& dweight, const Tensor& probs, const Tensor& topk_idx,
                          bool norm_topk) {
  const int64_t n_tokens = probs.dim(0), n_experts = probs.dim(1), k = topk_idx.dim(1);
  T* dr = dlogits.ptr<T>();
  const T* ds = dprobs.defined() ? dprobs.ptr<T>() : nullptr;
  const T* dw = dweight.ptr<T>();
  const T* s = probs.ptr<T>();
  const int32_t* idx = topk_idx.ptr<int32_t>();
  const int n_threads = cpu::team(threads, n_tokens * n_experts);
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* s_t = s + t * n_experts;
    const int32_t* idx_t = idx + t * k;
    const T* dw_t = dw + t * k;
    T* dr_t = dr + t * n_experts;
    // Gate-path gradient on each selected expert (sparse part of g).
    T selected_sum = 0, weighted_dw = 0;
    if (norm_topk) {
      for (int64_t j = 0; j < k; ++j) selected_sum += s_t[idx_t[j]];
      for (int64_t j = 0; j < k; ++j) weighted_dw += dw_t[j] * s_t[idx_t[j]];
      weighted_dw /= selected_sum;  // sum_j dw_j w_j
    }
    auto gate_grad = [&](int64_t j) {
      return norm_topk ? (dw_t[j] - weighted_dw) / selected_sum : dw_t[j];
    };
    T dot = 0;  // <s, g>
    if (ds) {
      for (int64_t e = 0; e < n_experts; ++e) dot += s_t[e] * ds[t * n_experts + e];
    }
    for (int64_t j = 0; j < k; ++j) dot += s_t[idx_t[j]] * gate_grad(j);
    for (int64_t e = 0; e < n_experts; ++e) {
      const T g = ds ? ds[t * n_experts + e] : T(0);
      dr_t[e] = s_t[e] * (g - dot);
    }
    for (int64_t j = 0; j < k; ++j) dr_t[idx_t[j]] += s_t[idx_t[j]] * gate_grad(j);
  }
}

}  // namespace

void CpuBackend::router_forward(Tensor& probs, Tensor& topk_idx, Tensor& topk_weight,
                                const Tensor& logits, const Tensor& bias, bool norm_topk) {
  const char* op = "router_forward";
  MOE_CHECK(logits.ndim() == 2 && logits.dim(1) >= 1, "{}: logits: expected [N, E] with E >= 1, "
            "found {}", op, shape_str(logits.shape()));
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  MOE_CHECK(topk_idx.ndim() == 2 && topk_idx.dim(0) == n_tokens, "{}: topk_idx: expected "
            "[{}, k], found {}", op, n_tokens, shape_str(topk_idx.shape()));
  const int64_t k = topk_idx.dim(1);
  MOE_CHECK(k >= 1 && k <= n_experts, "{}: top-k must be in [1, E = {}], found k = {}", op,
            n_experts, k);
  check_shape(probs, {n_tokens, n_experts}, "router_forward: probs");
  check_shape(topk_weight, {n_tokens, k}, "router_forward: topk_weight");
  check_dtype(topk_idx, DType::kI32, op, "topk_idx");
  const DType dt = logits.dtype();
  check_dtype(probs, dt, op, "probs");
  check_dtype(topk_weight, dt, op, "topk_weight");
  if (bias.defined()) {
    check_shape(bias, {n_experts}, "router_forward: bias");
    check_dtype(bias, dt, op, "bias");
  }
  dispatch_float(dt, op, [&](auto tag) {
    router_forward_impl<decltype(tag)>(threads_, probs, topk_idx, topk_weight, logits, bias,
                                       norm_topk);
  });
}

void CpuBackend::router_backward(Tensor& dlogits, const Tensor& dprobs, const Tensor& dweight,
                                 const Tensor& probs, const Tensor& topk_idx, bool norm_topk) {
  const char* op = "router_backward";
  MOE_CHECK(probs.ndim() == 2, "{}: probs: expected [N, E], found {}", op,
            shape_str(probs.shape()));
  const int64_t n_tokens = probs.dim(0), n_experts = probs.dim(1);
  check_topk_idx(topk_idx, n_tokens, n_experts, op);
  const int64_t k = topk_idx.dim(1);
  const DType dt = probs.dtype();
  check_shape(dlogits, {n_tokens, n_experts}, "router_backward: dlogits");
  check_shape(dweight, {n_tokens, k}, "router_backward: dweight");
  check_dtype(dlogits, dt, op, "dlogits");
  check_dtype(dweight, dt, op, "dweight");
  if (dprobs.defined()) {
    check_shape(dprobs, {n_tokens, n_experts}, "router_backward: dprobs");
    check_dtype(dprobs, dt, op, "dprobs");
  }
  dispatch_float(dt, op, [&](auto tag) {
    router_backward_impl<decltype(tag)>(threads_, dlogits, dprobs, dweight, probs, topk_idx,
                                        norm_topk);
  });
}

void CpuBackend::topk_mass_forward(Tensor& mass, const Tensor& probs, const Tensor& topk_idx) {
  const char* op = "topk_mass_forward";
  MOE_CHECK(probs.ndim() == 2, "{}: probs: expected [N, E], found {}", op,
            shape_str(probs.shape()));
  const int64_t n_tokens = probs.dim(0), n_experts = probs.dim(1);
  check_topk_idx(topk_idx, n_tokens, n_experts, op);
  check_shape(mass, {n_tokens}, "topk_mass_forward: mass");
  check_dtype(mass, probs.dtype(), op, "mass");
  const int64_t k = topk_idx.dim(1);
  dispatch_float(probs.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* m = mass.ptr<T>();
    const T* s = probs.ptr<T>();
    const int32_t* idx = topk_idx.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_tokens * k);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      T sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += s[t * n_experts + idx[t * k + j]];
      m[t] = sum;
    }
  });
}

void CpuBackend::topk_mass_backward(Tensor& dprobs, const Tensor& dmass, const Tensor& topk_idx) {
  const char* op = "topk_mass_backward";
  MOE_CHECK(dprobs.ndim() == 2, "{}: dprobs: expected [N, E], found {}", op,
            shape_str(dprobs.shape()));
  const int64_t n_tokens = dprobs.dim(0), n_experts = dprobs.dim(1);
  check_topk_idx(topk_idx, n_tokens, n_experts, op);
  check_shape(dmass, {n_tokens}, "topk_mass_backward: dmass");
  check_dtype(dmass, dprobs.dtype(), op, "dmass");
  const int64_t k = topk_idx.dim(1);
  dispatch_float(dprobs.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* ds = dprobs.ptr<T>();
    const T* dm = dmass.ptr<T>();
    const int32_t* idx = topk_idx.ptr<int32_t>();
    const int n_threads = cpu::team(threads_, n_tokens * k);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t j = 0; j < k; ++j) ds[t * n_experts + idx[t * k + j]] += dm[t];
    }
  });
}

void CpuBackend::expert_load_accumulate(Tensor& load, const Tensor& topk_idx) {
  const char* op = "expert_load_accumulate";
  MOE_CHECK(load.ndim() == 1, "{}: load: expected [E], found {}", op, shape_str(load.shape()));
  const int64_t n_experts = load.dim(0);
  MOE_CHECK(topk_idx.ndim() == 2, "{}: topk_idx: expected [N, k], found {}", op,
            shape_str(topk_idx.shape()));
  check_topk_idx(topk_idx, topk_idx.dim(0), n_experts, op);
  // Integer counts first, then one addition per expert: exact and order-independent.
  std::vector<int64_t> counts(static_cast<size_t>(n_experts), 0);
  const int32_t* idx = topk_idx.ptr<int32_t>();
  for (int64_t i = 0; i < topk_idx.numel(); ++i) ++counts[idx[i]];
  dispatch_float(load.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* l = load.ptr<T>();
    for (int64_t e = 0; e < n_experts; ++e) l[e] += static_cast<T>(counts[e]);
  });
}

void CpuBackend::balance_bias_update(Tensor& bias, const Tensor& load, float gamma) {
  const char* op = "balance_bias_update";
  MOE_CHECK(bias.ndim() == 1 && bias.dim(0) >= 1, "{}: bias: expected [E], found {}", op,
            shape_str(bias.shape()));
  const int64_t n_experts = bias.dim(0);
  check_shape(load, {n_experts}, "balance_bias_update: load");
  check_dtype(load, bias.dtype(), op, "load");
  dispatch_float(bias.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* b = bias.ptr<T>();
    const T* l = load.ptr<T>();
    // The mean in double: loads are integer counts, so mean == load_e is decided exactly.
    double total = 0;
    for (int64_t e = 0; e < n_experts; ++e) total += static_cast<double>(l[e]);
    const double mean = total / static_cast<double>(n_experts);
    for (int64_t e = 0; e < n_experts; ++e) {
      const double diff = mean - static_cast<double>(l[e]);
      const T sign = diff > 0 ? T(1) : (diff < 0 ? T(-1) : T(0));
      b[e] += static_cast<T>(gamma) * sign;
    }
  });
}

}  // namespace moe
