// Helpers shared by the whole-model GPU tests (test_cuda_model.cpp, test_cuda_precision.cpp):
// a small config, a random batch, a relative L2 error and the routing comparison.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "config/config.h"
#include "model/model.h"

namespace moe {

inline bool has_cuda() {
  auto b = available_backends();
  return std::find(b.begin(), b.end(), "cuda") != b.end();
}
#define REQUIRE_CUDA()                                                                       \
  if (!has_cuda()) GTEST_SKIP() << "no CUDA device on this machine: skipped, not passed"

inline Config small_config(const std::vector<std::string>& losses, const std::string& arch) {
  Config c;
  c.model.arch = arch;
  c.model.vocab_size = 97;
  c.model.d_model = 48;
  c.model.n_layers = 3;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.n_experts = 6;
  c.model.top_k = 2;
  c.model.expert_ffn_dim = 40;
  c.model.ffn_dim = 72;
  c.model.max_seq_len = 24;
  if (arch == "deepseek") {
    c.model.n_shared_experts = 1;
    c.model.dense_layers = 1;
    c.model.top_k = 3;
  }
  c.loss.losses = losses;
  c.train.batch_size = 3;
  c.train.seq_len = 24;
  c.train.grad_clip = 1.0;
  return c;
}

inline Batch make_batch(const Config& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.model.vocab_size - 1));
  Batch b;
  b.batch = c.train.batch_size;
  b.seq = c.train.seq_len;
  for (int64_t i = 0; i < b.batch * b.seq; ++i) {
    b.inputs.push_back(pick(rng));
    b.targets.push_back(i % 11 == 5 ? -1 : pick(rng));
  }
  return b;
}

inline double relative_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Every token has the same SET of experts in every MoE layer of both models (slot order may
// differ: the sums over slots do not depend on it).
inline bool same_expert_sets(MoeModel& a, MoeModel& b) {
  const std::vector<LayerRouting> ra = a.routing(), rb = b.routing();
  if (ra.size() != rb.size()) return false;
  for (size_t l = 0; l < ra.size(); ++l) {
    const int64_t k = ra[l].top_k;
    for (int64_t t = 0; t < ra[l].n_tokens; ++t) {
      std::vector<int32_t> x(ra[l].topk_idx.begin() + t * k, ra[l].topk_idx.begin() + (t + 1) * k);
      std::vector<int32_t> y(rb[l].topk_idx.begin() + t * k, rb[l].topk_idx.begin() + (t + 1) * k);
      std::sort(x.begin(), x.end());
      std::sort(y.begin(), y.end());
      if (x != y) return false;
    }
  }
  return true;
}

}  // namespace moe
