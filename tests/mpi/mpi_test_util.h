// Shared by the multi-process tests: a deterministic token stream (the trainer's TrainingData),
// tiny run configs, and comparisons of whole models.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "support/paths.h"
#include "config/config.h"
#include "train/data_source.h"
#include "train/trainer.h"

namespace moe::test {

// Parameters after several Adam steps, compared between two ways of summing the same gradients
// (ranks' all-reduce against local accumulation, or EP's one GEMM against per-rank GEMMs): Adam's
// division by sqrt(v) magnifies the float32 rounding of small gradients (an expert that saw few
// tokens), so parameters get a looser bound than losses and gradients. 5e-6 of a tensor's largest
// entry is still ~100 float32 ulps; a lost or doubled rank moves parameters by ~1e-2. Measured:
// 2.3e-7..1.09e-6 on the two x86-64 machines the suite has run on.
constexpr double kParamTol = 5e-6;

// A noisy periodic token stream with a resumable position and two fixed validation batches.
class StreamData final : public TrainingData {
 public:
  StreamData(int64_t batch, int64_t seq, int64_t vocab, uint64_t salt = 0)
      : batch_(batch), seq_(seq), vocab_(vocab), salt_(salt) {}
  int64_t vocab_size() const override { return vocab_; }
  std::string tokenizer_model_bytes() const override { return "no tokenizer"; }
  uint64_t content_hash() const override {
    std::vector<int32_t> first(64);
    for (size_t i = 0; i < first.size(); ++i) first[i] = token(static_cast<int64_t>(i));
    return hash_bytes(first.data(), first.size() * 4);
  }
  void next_train_batch(Batch& out) override { fill(out, pos_), pos_ += batch_ * seq_; }
  nlohmann::json train_state() const override { return {{"pos", pos_}}; }
  void restore_train_state(const nlohmann::json& s) override { pos_ = s.at("pos"); }
  void reset_valid() override { valid_ = 0; }
  bool next_valid_batch(Batch& out) override {
    if (valid_ >= 2) return false;
    fill(out, 1'000'000 + 1000 * valid_++);
    return true;
  }
  int64_t target_bytes(const Batch& b) const override { return 3 * b.batch * b.seq; }

 private:
  int32_t token(int64_t i) const {
    uint64_t h = (static_cast<uint64_t>(i) + salt_) * 0x9e3779b97f4a7c15ULL;
    int32_t noise = static_cast<int32_t>((h >> 40) % 5 == 0 ? (h >> 20) % 61 : 0);
    return static_cast<int32_t>(((i % 7) * 3 + noise) % vocab_);
  }
  void fill(Batch& b, int64_t start) const {
    b.batch = batch_;
    b.seq = seq_;
    b.inputs.resize(static_cast<size_t>(b.batch * b.seq));
    b.targets.resize(b.inputs.size());
    for (int64_t i = 0; i < b.batch * b.seq; ++i) {
      b.inputs[static_cast<size_t>(i)] = token(start + i);
      b.targets[static_cast<size_t>(i)] = (i % 11 == 5) ? -1 : token(start + i + 1);
    }
  }
  int64_t batch_, seq_, vocab_;
  uint64_t salt_;
  int64_t pos_ = 0, valid_ = 0;
};

// A 3-layer model, every loss on; deepseek: 1 dense layer, shared experts, bias balancing.
inline Config dp_config(const std::string& arch, const std::string& out_dir) {
  Config c;
  c.model.arch = arch;
  c.model.vocab_size = 61;
  c.model.d_model = 16;
  c.model.n_layers = 3;
  c.model.n_heads = 2;
  c.model.n_kv_heads = 1;
  c.model.ffn_dim = 24;
  c.model.n_experts = 4;
  c.model.top_k = 2;
  c.model.expert_ffn_dim = 12;
  c.model.max_seq_len = 8;
  c.model.init_std = 0.1;
  if (arch == "deepseek") {
    c.model.n_experts = 8;
    c.model.n_shared_experts = 1;
    c.model.dense_layers = 1;
    c.model.norm_topk_prob = true;
    c.model.tie_embeddings = false;
    c.loss.balance = "bias";
    c.loss.bias_gamma = 0.01;
  }
  c.loss.losses = {"lb", "z", "sp", "cp"};
  c.train.batch_size = 2;
  c.train.seq_len = 8;
  c.train.max_steps = 20;
  c.train.warmup_steps = 0;
  c.train.lr = 1e-2;
  c.train.grad_accum = 1;
  c.train.threads = 1;
  c.run.out_dir = out_dir;
  c.run.log_every = 1;
  c.run.eval_every = 0;
  c.run.eval_batches = 2;
  c.run.save_every = 0;
  return c;
}

// A fresh folder that every rank names the same (rank 0 makes it and broadcasts its path).
inline std::string shared_temp_dir(Communicator& comm, const std::string& tag) {
  std::string dir = comm.rank() == 0 ? make_temp_dir(tag) : "";
  comm.broadcast_host(dir, 0);
  return dir;
}

// max_i |a_i - b_i| / max_i |b_i| for one tensor (0 when both are all zero).
inline double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

inline double rel_diff(double a, double b) {
  return std::abs(a - b) / std::max(std::abs(b), 1e-30);
}

}  // namespace moe::test
