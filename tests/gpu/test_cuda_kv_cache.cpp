// MoeModel's incremental eval forward on CUDA (prefill_cache + forward_cached): its logits at the
// continuation positions against forward() on the concatenated sequences on the same GPU, and
// against the CPU's cached pass, in f32 and with bf16 activations.
//
// Tolerances on the logits (|a - b| <= tol + tol * |b|): f32 2e-4 (fp32 with different summation
// orders, as the op harness); bf16 8e-2 against forward() on the GPU (both round activations to
// bf16, at different places) and 1.5e-1 against the CPU's f32 (bf16's 8 mantissa bits through 3
// layers). Without a CUDA device every test is SKIPPED with a message, never passed.
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "model/model.h"

namespace moe {
namespace {

bool has_cuda() {
  auto b = available_backends();
  return std::find(b.begin(), b.end(), "cuda") != b.end();
}

ModelConfig config(const std::string& arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 97;
  c.d_model = 48;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.n_experts = 6;
  c.top_k = 2;
  c.expert_ffn_dim = 40;
  c.ffn_dim = 72;
  c.max_seq_len = 24;
  if (arch == "deepseek") {
    c.n_shared_experts = 1;
    c.dense_layers = 1;
  }
  return c;
}

std::vector<int32_t> ids(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, 96);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = pick(rng);
  return v;
}

Batch rows_batch(const std::vector<std::vector<int32_t>>& rows) {
  Batch b;
  b.batch = static_cast<int64_t>(rows.size());
  for (const auto& r : rows) b.seq = std::max<int64_t>(b.seq, static_cast<int64_t>(r.size()));
  b.inputs.assign(b.batch * b.seq, 0);
  b.targets.assign(b.batch * b.seq, -1);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i].begin(), rows[i].end(), b.inputs.begin() + i * b.seq);
  }
  return b;
}

struct Problem {
  std::vector<std::vector<int32_t>> contexts = {ids(7, 1), ids(18, 2), ids(3, 3)};
  std::vector<std::vector<int32_t>> conts = {ids(1, 4), ids(5, 5), ids(6, 6), ids(2, 7)};
  std::vector<int32_t> ctx_row = {0, 0, 1, 2}, ctx_len = {7, 7, 18, 2};  // 18 + 6 = max_seq_len
};

// Continuation logits [row][position * V] from the cached pass.
std::vector<std::vector<float>> cached_logits(MoeModel& m, const Problem& p) {
  m.prefill_cache(rows_batch(p.contexts));
  const Batch b = rows_batch(p.conts);
  m.forward_cached(b, p.ctx_row, p.ctx_len);
  const std::vector<float> all = m.logits_host();
  std::vector<std::vector<float>> out;
  for (size_t r = 0; r < p.conts.size(); ++r) {
    auto first = all.begin() + static_cast<int64_t>(r) * b.seq * 97;
    out.emplace_back(first, first + static_cast<int64_t>(p.conts[r].size()) * 97);
  }
  return out;
}

// The same positions from forward() on each concatenated sequence.
std::vector<std::vector<float>> full_logits(MoeModel& m, const Problem& p) {
  std::vector<std::vector<float>> out;
  for (size_t r = 0; r < p.conts.size(); ++r) {
    std::vector<int32_t> seq(p.contexts[p.ctx_row[r]].begin(),
                             p.contexts[p.ctx_row[r]].begin() + p.ctx_len[r]);
    seq.insert(seq.end(), p.conts[r].begin(), p.conts[r].end());
    m.forward(rows_batch({seq}), /*need_grad=*/false);
    const std::vector<float> all = m.logits_host();
    out.emplace_back(all.begin() + p.ctx_len[r] * 97, all.end());
  }
  return out;
}

using Rows = std::vector<std::vector<float>>;

void expect_close(const Rows& a, const Rows& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    ASSERT_EQ(a[r].size(), b[r].size()) << what << " row " << r;
    int bad = 0;
    for (size_t i = 0; i < a[r].size(); ++i) {
      const double d = std::fabs(double(a[r][i]) - b[r][i]);
      if (!(d <= tol + tol * std::fabs(double(b[r][i]))) && ++bad <= 3)
        ADD_FAILURE() << what << " row " << r << " [" << i << "]: " << a[r][i] << " vs " << b[r][i];
    }
    EXPECT_EQ(bad, 0) << what << " row " << r;
  }
}

TEST(CudaKvCacheModel, CachedLogitsMatchFullForwardAndCpu) {
  if (!has_cuda()) GTEST_SKIP() << "no CUDA device on this machine: skipped, not passed";
  LossConfig loss;
  loss.losses = {"lb"};
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");
  const Problem p;
  for (const std::string arch : {"vanilla", "deepseek"}) {
    const ModelConfig c = config(arch);
    MoeModel ref(c, loss, *cpu, 3, c.max_seq_len);
    ref.init_parameters(21);
    const auto cpu_cached = cached_logits(ref, p);
    for (DType dt : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(arch + " " + dtype_name(dt));
      MoeModel m(c, loss, *gpu, 3, c.max_seq_len, dt);
      m.init_parameters(21);  // deterministic in the seed: the CPU model's weights
      const auto cached = cached_logits(m, p);
      const bool bf16 = dt == DType::kBF16;
      expect_close(cached, full_logits(m, p), bf16 ? 8e-2 : 2e-4, "cached vs full (cuda)");
      expect_close(cached, cpu_cached, bf16 ? 1.5e-1 : 2e-4, "cuda vs cpu (cached)");
    }
  }
}

}  // namespace
}  // namespace moe
