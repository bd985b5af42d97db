// CPU loss ops: the language-model cross-entropy and the auxiliary losses of docs/model.md §2 — load
// balance (lb), router z-loss (z), intra-layer specialization (sp) and cross-layer coupling (cp).
//
// Conventions (backend.h): forward writes the UNSCALED loss of one MoE layer into loss[1];
// backward ADDS coef * dL/dinput (several losses share one gradient buffer), except
// cross_entropy_backward and cp_loss_backward, which overwrite their output.
//
// Decisions:
// - Per-token work runs in parallel over tokens; the scalar loss is then reduced SERIALLY over a
//   per-token array in token order, in double, so the value does not depend on the thread count.
// - log-sum-exp subtracts the row maximum (stable for any logit magnitude).
// - sp: the cosines of one token's k rows come from their Gram matrix (k x k dot products), so
//   no normalised copy of z is made; a row whose norm is below 1e-12 is divided by 1e-12 instead
//   (docs/model.md §2.4), and its gradient then has no projection term (the denominator is constant there).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/moe_op_checks.h"
#include "backend/cpu/vec_exp.h"

namespace moe {
namespace {

using cpu::check_dtype;
using cpu::check_index_tensor;
using cpu::check_ndim;
using cpu::check_topk_idx;
using cpu::dispatch_float;

constexpr double kCosNormFloor = 1e-12;  // docs/model.md §2.4: cos uses max(||z||, 1e-12)

template <typename T> T row_logsumexp(const T* x, int64_t n) {
  T max_x = x[0];
  for (int64_t i = 1; i < n; ++i) max_x = std::max(max_x, x[i]);
  T sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - max_x);
  return max_x + std::log(sum);
}

// ---- cross-entropy rows over the vocabulary -----------------------------------------------------
// The LM head's softmax is the one elementwise loop of a training step as large as a GEMM output
// (N x V exps in forward and again in backward), so its rows run through the vectorised exp of
// vec_exp.h (float; double keeps std::exp for the finite-difference tests) and the max and the
// sum use 8 fixed lanes (vectorisable without -ffast-math; a fixed order, so deterministic).

template <typename T> T lane_max(const T* x, int64_t n) {
  constexpr int kLanes = 8;
  if (n < kLanes) {
    T m = x[0];
    for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
    return m;
  }
  T lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = x[l];
  int64_t i = kLanes;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
  }
  T m = lane[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, lane[l]);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

template <typename T> double lane_sum(const T* x, int64_t n) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]);
  }
  double tail = 0;
  for (; i < n; ++i) tail += static_cast<double>(x[i]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) +
         tail;
}

// log sum_v exp(x_v) of one vocabulary row; `scratch` holds n values (clobbered).
template <typename T> T vocab_logsumexp(const T* x, int64_t n, T* scratch) {
  const T max_x = lane_max(x, n);
  for (int64_t i = 0; i < n; ++i) scratch[i] = x[i] - max_x;
  cpu::exp_array(scratch, scratch, n);
  return static_cast<T>(static_cast<double>(max_x) + std::log(lane_sum(scratch, n)));
}

// dx[v] = scale * exp(x[v] - lse) (the softmax times scale).
template <typename T> void scaled_softmax_row(T* dx, const T* x, T lse, T scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] - lse;
  cpu::exp_array(dx, dx, n);
  for (int64_t i = 0; i < n; ++i) dx[i] *= scale;
}

// Sums a per-token array in index order (double), the one reduction order of every loss here.
template <typename T> double ordered_sum(const std::vector<T>& values) {
  double total = 0;
  for (const T& v : values) total += static_cast<double>(v);
  return total;
}

void check_loss_scalar(const Tensor& loss, DType dtype, const char* op) {
  check_shape(loss, {1}, op);
  check_dtype(loss, dtype, op, "loss");
}

// ---- sp helpers: Gram matrix of one token's k rows ---------------------------------------------

// gram[a * k + b] = <z_a, z_b> for the rows of token t; norm[a] = max(||z_a||, floor).
template <typename T>
void token_gram(std::vector<double>& gram, std::vector<double>& norm, const T* z,
                const int32_t* rows, int64_t k, int64_t width) {
  for (int64_t a = 0; a < k; ++a) {
    const T* za = z + static_cast<int64_t>(rows[a]) * width;
    for (int64_t b = a; b < k; ++b) {
      const T* zb = z + static_cast<int64_t>(rows[b]) * width;
      gram[a * k + b] = gram[b * k + a] = cpu::lane_dot(za, zb, width);
    }
  }
  for (int64_t a = 0; a < k; ++a) norm[a] = std::max(std::sqrt(gram[a * k + a]), kCosNormFloor);
}

template <typename T>
void sp_forward_impl(int threads, Tensor& loss, const Tensor& z, const Tensor& token_row) {
  const int64_t n_tokens = token_row.dim(0), k = token_row.dim(1), width = z.dim(1);
  const T* zp = z.ptr<T>();
  const int32_t* tr = token_row.ptr<int32_t>();
  std::vector<double> per_token(static_cast<size_t>(n_tokens), 0.0);
  const int n_threads = cpu::team(threads, n_tokens * k * k * width);
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> gram(static_cast<size_t>(k * k)), norm(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      token_gram(gram, norm, zp, tr + t * k, k, width);
      double sum = 0;
      for (int64_t a = 0; a < k; ++a) {
        for (int64_t b = a + 1; b < k; ++b) {
          const double cos = gram[a * k + b] / (norm[a] * norm[b]);
          sum += 2.0 * cos * cos;  // the ordered pairs (a, b) and (b, a)
        }
      }
      per_token[t] = sum;
    }
  }
  loss.ptr<T>()[0] = n_tokens ? static_cast<T>(ordered_sum(per_token) / n_tokens) : T(0);
}

// d/dz_a of sum_{b != a} 2 cos_ab^2 = sum_{b != a} 4 cos_ab dcos_ab/dz_a, with
// dcos_ab/dz_a = z_b / (n_a n_b) - cos_ab z_a / n_a^2 (the second term only when ||z_a|| > floor).
template <typename T>
void sp_backward_impl(int threads, Tensor& dz, const Tensor& z, const Tensor& token_row,
                      float coef) {
  const int64_t n_tokens = token_row.dim(0), k = token_row.dim(1), width = z.dim(1);
  if (n_tokens == 0 || k < 2) return;
  const T* zp = z.ptr<T>();
  T* dzp = dz.ptr<T>();
  const int32_t* tr = token_row.ptr<int32_t>();
  const double scale = 4.0 * static_cast<double>(coef) / static_cast<double>(n_tokens);
  const int n_threads = cpu::team(threads, n_tokens * k * k * width);
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> gram(static_cast<size_t>(k * k)), norm(static_cast<size_t>(k));
    std::vector<double> row_coef(static_cast<size_t>(k)), acc(static_cast<size_t>(width));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const int32_t* rows = tr + t * k;
      token_gram(gram, norm, zp, rows, k, width);
      for (int64_t a = 0; a < k; ++a) {
        // dz_a += scale * (sum_b c_ab / (n_a n_b) z_b - self_coef * z_a)
        double self_coef = 0;
        for (int64_t b = 0; b < k; ++b) {
          if (b == a) {
            row_coef[b] = 0;
            continue;
          }
          const double cos = gram[a * k + b] / (norm[a] * norm[b]);
          row_coef[b] = cos / (norm[a] * norm[b]);
          self_coef += cos * cos;
        }
        const bool above_floor = std::sqrt(gram[a * k + a]) > kCosNormFloor;
        self_coef = above_floor ? self_coef / (norm[a] * norm[a]) : 0.0;
        T* dza = dzp + static_cast<int64_t>(rows[a]) * width;
        const T* za = zp + static_cast<int64_t>(rows[a]) * width;
        for (int64_t c = 0; c < width; ++c) acc[c] = -self_coef * za[c];
        for (int64_t b = 0; b < k; ++b) {  // slot order: a fixed summation order
          if (b == a) continue;
          const T* zb = zp + static_cast<int64_t>(rows[b]) * width;
          for (int64_t c = 0; c < width; ++c) acc[c] += row_coef[b] * zb[c];
        }
        for (int64_t c = 0; c < width; ++c) dza[c] += static_cast<T>(scale * acc[c]);
      }
    }
  }
}

}  // namespace

// ---- cross-entropy ------------------------------------------------------------------------------

// Targets index the vocabulary; negative ones are ignored positions. Checked before any
// parallel region, so an error is never thrown inside one.
static void check_targets_in_vocab(const int32_t* tgt, int64_t n_tokens, int64_t vocab,
                                   const char* op) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    MOE_CHECK(tgt[t] < vocab, "{}: targets[{}] = {} is outside the vocabulary [0, {}) "
              "(negative = ignored)", op, t, tgt[t], vocab);
  }
}

void CpuBackend::cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                                       const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  check_ndim(logits, 2, op, "logits", "[N, V]");
  const int64_t n_tokens = logits.dim(0), vocab = logits.dim(1);
  MOE_CHECK(vocab >= 1, "{}: logits: expected V >= 1, found {}", op, shape_str(logits.shape()));
  check_shape(loss, {n_tokens}, "cross_entropy_forward: loss");
  check_shape(lse, {n_tokens}, "cross_entropy_forward: lse");
  check_shape(targets, {n_tokens}, "cross_entropy_forward: targets");
  check_dtype(targets, DType::kI32, op, "targets");
  check_dtype(loss, logits.dtype(), op, "loss");
  check_dtype(lse, logits.dtype(), op, "lse");
  const int32_t* tgt = targets.ptr<int32_t>();
  check_targets_in_vocab(tgt, n_tokens, vocab, op);
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.ptr<T>();
    T* nll = loss.ptr<T>();
    T* lse_out = lse.ptr<T>();
    const int n_threads = cpu::team(threads_, n_tokens * vocab);
#pragma omp parallel num_threads(n_threads)
    {
      thread_local std::vector<T> scratch;  // one vocabulary row; grows once
      if (scratch.size() < static_cast<size_t>(vocab)) scratch.resize(static_cast<size_t>(vocab));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < n_tokens; ++t) {
        const T* x_t = x + t * vocab;
        lse_out[t] = vocab_logsumexp(x_t, vocab, scratch.data());
        nll[t] = tgt[t] >= 0 ? lse_out[t] - x_t[tgt[t]] : T(0);
      }
    }
  });
}

void CpuBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                        const Tensor& targets, float scale) {
  const char* op = "cross_entropy_backward";
  check_ndim(logits, 2, op, "logits", "[N, V]");
  const int64_t n_tokens = logits.dim(0), vocab = logits.dim(1);
  check_shape(dlogits, {n_tokens, vocab}, "cross_entropy_backward: dlogits");
  check_shape(lse, {n_tokens}, "cross_entropy_backward: lse");
  check_shape(targets, {n_tokens}, "cross_entropy_backward: targets");
  check_dtype(targets, DType::kI32, op, "targets");
  check_dtype(dlogits, logits.dtype(), op, "dlogits");
  check_dtype(lse, logits.dtype(), op, "lse");
  const int32_t* tgt = targets.ptr<int32_t>();
  check_targets_in_vocab(tgt, n_tokens, vocab, op);
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.ptr<T>();
    const T* lse_in = lse.ptr<T>();
    T* dx = dlogits.ptr<T>();
    const T s = static_cast<T>(scale);
    const int n_threads = cpu::team(threads_, n_tokens * vocab);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      T* dx_t = dx + t * vocab;
      if (tgt[t] < 0) {
        std::fill(dx_t, dx_t + vocab, T(0));
        continue;
      }
      scaled_softmax_row(dx_t, x + t * vocab, lse_in[t], s, vocab);
      dx_t[tgt[t]] -= s;
    }
  });
}

// ---- load balance: L = E * sum_e f_e P_e; the counts f are constants of the backward ------------

namespace {
// counts[e] = number of (token, slot) pairs routed to e (integer, exact).
std::vector<int64_t> expert_counts(const Tensor& topk_idx, int64_t n_experts) {
  std::vector<int64_t> counts(static_cast<size_t>(n_experts), 0);
  const int32_t* idx = topk_idx.ptr<int32_t>();
  for (int64_t i = 0; i < topk_idx.numel(); ++i) ++counts[idx[i]];
  return counts;
}

void check_lb_args(const Tensor& probs, const Tensor& topk_idx, const char* op) {
  check_ndim(probs, 2, op, "probs", "[N, E]");
  check_topk_idx(topk_idx, probs.dim(0), probs.dim(1), op);
}
}  // namespace

void CpuBackend::lb_loss_forward(Tensor& loss, const Tensor& probs, const Tensor& topk_idx) {
  const char* op = "lb_loss_forward";
  check_lb_args(probs, topk_idx, op);
  check_loss_scalar(loss, probs.dtype(), op);
  const int64_t n_tokens = probs.dim(0), n_experts = probs.dim(1), k = topk_idx.dim(1);
  const std::vector<int64_t> counts = expert_counts(topk_idx, n_experts);
  dispatch_float(probs.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* s = probs.ptr<T>();
    if (n_tokens == 0) {
      loss.ptr<T>()[0] = T(0);
      return;
    }
    // P_e summed over tokens in token order (serial: O(N E), negligible next to the router GEMM).
    std::vector<double> prob_sum(static_cast<size_t>(n_experts), 0.0);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t e = 0; e < n_experts; ++e) prob_sum[e] += s[t * n_experts + e];
    }
    double total = 0;
    const double n = static_cast<double>(n_tokens);
    for (int64_t e = 0; e < n_experts; ++e) {
      total += (static_cast<double>(counts[e]) / (k * n)) * (prob_sum[e] / n);
    }
    loss.ptr<T>()[0] = static_cast<T>(n_experts * total);
  });
}

void CpuBackend::lb_loss_backward(Tensor& dprobs, const Tensor& probs, const Tensor& topk_idx,
                                  float coef) {
  const char* op = "lb_loss_backward";
  check_lb_args(probs, topk_idx, op);
  check_shape(dprobs, probs.shape(), "lb_loss_backward: dprobs");
  check_dtype(dprobs, probs.dtype(), op, "dprobs");
  const int64_t n_tokens = probs.dim(0), n_experts = probs.dim(1), k = topk_idx.dim(1);
  if (n_tokens == 0) return;
  const std::vector<int64_t> counts = expert_counts(topk_idx, n_experts);
  dispatch_float(probs.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    // dL/ds_t(e) = E * f_e / N, the same for every token.
    const double n = static_cast<double>(n_tokens);
    std::vector<T> grad(static_cast<size_t>(n_experts));
    for (int64_t e = 0; e < n_experts; ++e) {
      grad[e] = static_cast<T>(coef * n_experts * (static_cast<double>(counts[e]) / (k * n)) / n);
    }
    T* ds = dprobs.ptr<T>();
    const int n_threads = cpu::team(threads_, n_tokens * n_experts);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t e = 0; e < n_experts; ++e) ds[t * n_experts + e] += grad[e];
    }
  });
}

// ---- router z-loss: L = mean_t lse_t^2 ---------------------------------------------------------

void CpuBackend::z_loss_forward(Tensor& loss, const Tensor& logits) {
  const char* op = "z_loss_forward";
  check_ndim(logits, 2, op, "logits", "[N, E]");
  MOE_CHECK(logits.dim(1) >= 1, "{}: logits: expected E >= 1, found {}", op,
            shape_str(logits.shape()));
  check_loss_scalar(loss, logits.dtype(), op);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.ptr<T>();
    std::vector<T> sq(static_cast<size_t>(n_tokens));
    const int n_threads = cpu::team(threads_, n_tokens * n_experts);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const T lse = row_logsumexp(x + t * n_experts, n_experts);
      sq[t] = lse * lse;
    }
    loss.ptr<T>()[0] = n_tokens ? static_cast<T>(ordered_sum(sq) / n_tokens) : T(0);
  });
}

void CpuBackend::z_loss_backward(Tensor& dlogits, const Tensor& logits, float coef) {
  const char* op = "z_loss_backward";
  check_ndim(logits, 2, op, "logits", "[N, E]");
  MOE_CHECK(logits.dim(1) >= 1, "{}: logits: expected E >= 1, found {}", op,
            shape_str(logits.shape()));
  check_shape(dlogits, logits.shape(), "z_loss_backward: dlogits");
  check_dtype(dlogits, logits.dtype(), op, "dlogits");
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.ptr<T>();
    T* dx = dlogits.ptr<T>();
    // d(lse^2)/dx_e = 2 lse softmax(x)_e
    const T scale = static_cast<T>(2.0 * coef / std::max<int64_t>(n_tokens, 1));
    const int n_threads = cpu::team(threads_, n_tokens * n_experts);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const T* x_t = x + t * n_experts;
      const T lse = row_logsumexp(x_t, n_experts);
      for (int64_t e = 0; e < n_experts; ++e) {
        dx[t * n_experts + e] += scale * lse * std::exp(x_t[e] - lse);
      }
    }
  });
}

// ---- intra-layer specialization: R_sp = (1/N) sum_t sum_{a != b} cos(z_a, z_b)^2 ---------------

namespace {
void check_sp_args(const Tensor& z, const Tensor& token_row, const char* op) {
  check_ndim(z, 2, op, "z", "[R, F]");
  check_ndim(token_row, 2, op, "token_row", "[N, k]");
  MOE_CHECK(token_row.dim(1) >= 1 && token_row.dim(0) * token_row.dim(1) == z.dim(0),
            "{}: token_row {} does not match z {}: expected [N, k] with N * k = R", op,
            shape_str(token_row.shape()), shape_str(z.shape()));
  check_index_tensor(token_row, token_row.dim(0), z.dim(0), op, "token_row", "dispatched row");
}
}  // namespace

void CpuBackend::sp_loss_forward(Tensor& loss, const Tensor& z, const Tensor& token_row) {
  const char* op = "sp_loss_forward";
  check_sp_args(z, token_row, op);
  check_loss_scalar(loss, z.dtype(), op);
  dispatch_float(z.dtype(), op,
                 [&](auto tag) { sp_forward_impl<decltype(tag)>(threads_, loss, z, token_row); });
}

void CpuBackend::sp_loss_backward(Tensor& dz, const Tensor& z, const Tensor& token_row,
                                  float coef) {
  const char* op = "sp_loss_backward";
  check_sp_args(z, token_row, op);
  check_shape(dz, z.shape(), "sp_loss_backward: dz");
  check_dtype(dz, z.dtype(), op, "dz");
  dispatch_float(z.dtype(), op, [&](auto tag) {
    sp_backward_impl<decltype(tag)>(threads_, dz, z, token_row, coef);
  });
}

// ---- cross-layer coupling: R_cp = -(1/N) sum_t sum_{l < M-1} m_l m_{l+1} ------------------------

void CpuBackend::cp_loss_forward(Tensor& loss, const Tensor& masses) {
  const char* op = "cp_loss_forward";
  check_ndim(masses, 2, op, "masses", "[M, N]");
  check_loss_scalar(loss, masses.dtype(), op);
  const int64_t n_layers = masses.dim(0), n_tokens = masses.dim(1);
  dispatch_float(masses.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* m = masses.ptr<T>();
    std::vector<double> per_token(static_cast<size_t>(n_tokens), 0.0);
    const int n_threads = cpu::team(threads_, n_layers * n_tokens);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0;
      for (int64_t l = 0; l + 1 < n_layers; ++l) {
        sum += static_cast<double>(m[l * n_tokens + t]) * m[(l + 1) * n_tokens + t];
      }
      per_token[t] = sum;
    }
    loss.ptr<T>()[0] = n_tokens ? static_cast<T>(-ordered_sum(per_token) / n_tokens) : T(0);
  });
}

void CpuBackend::cp_loss_backward(Tensor& dmasses, const Tensor& masses, float coef) {
  const char* op = "cp_loss_backward";
  check_ndim(masses, 2, op, "masses", "[M, N]");
  check_shape(dmasses, masses.shape(), "cp_loss_backward: dmasses");
  check_dtype(dmasses, masses.dtype(), op, "dmasses");
  const int64_t n_layers = masses.dim(0), n_tokens = masses.dim(1);
  dispatch_float(masses.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* m = masses.ptr<T>();
    T* dm = dmasses.ptr<T>();
    // dR/dm_{l,t} = -(m_{l-1,t} + m_{l+1,t}) / N, each neighbour only where it exists.
    const T scale = static_cast<T>(-static_cast<double>(coef) / std::max<int64_t>(n_tokens, 1));
    const int n_threads = cpu::team(threads_, n_layers * n_tokens);
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t l = 0; l < n_layers; ++l) {
        T neighbours = 0;
        if (l > 0) neighbours += m[(l - 1) * n_tokens + t];
        if (l + 1 < n_layers) neighbours += m[(l + 1) * n_tokens + t];
        dm[l * n_tokens + t] = scale * neighbours;
      }
    }
  });
}

}  // namespace moe
