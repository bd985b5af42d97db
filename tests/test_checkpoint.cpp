// Checkpoints with a real (tiny) model on the CPU backend: save/load round trip of weights and
// AdamW moments (the next update after a reload is bitwise the same), manifest checks of
// truncated and altered files, refusal to overwrite, the trainer's
// bit-identical resume (N steps + resume N steps == 2N steps straight), gradient accumulation
// (2 micro-batches of B == 1 batch of 2B without the per-micro-batch auxiliary losses) and the
// global gradient norm.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "support/paths.h"
#include "checkpoint/checkpoint.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

Config tiny_config(const std::string& out_dir, const std::string& arch = "vanilla") {
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
  if (arch == "deepseek") {
    c.model.n_shared_experts = 1;
    c.model.dense_layers = 1;
    c.loss.balance = "bias";
  }
  c.loss.losses = {"lb", "z", "sp", "cp"};
  c.train.batch_size = 2;
  c.train.seq_len = 8;
  c.train.max_steps = 8;
  c.train.warmup_steps = 2;
  c.train.lr = 1e-2;
  c.train.grad_accum = 2;
  c.train.threads = 2;
  c.run.out_dir = out_dir;
  c.run.log_every = 1;
  c.run.eval_every = 2;
  c.run.eval_batches = 2;
  c.run.save_every = 100;
  return c;
}

// A deterministic token stream (a noisy periodic pattern, so there is something to learn) with
// a resumable position, and two fixed validation batches.
class StreamData final : public TrainingData {
 public:
  explicit StreamData(const Config& c) : cfg_(c) {}
  int64_t vocab_size() const override { return cfg_.model.vocab_size; }
  std::string tokenizer_model_bytes() const override { return "not a real tokenizer"; }
  uint64_t content_hash() const override { return 61; }  // the stream is a fixed function
  void next_train_batch(Batch& out) override { fill(out, pos_), pos_ += out.batch * out.seq; }
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
    uint64_t h = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ULL;
    int32_t noise = static_cast<int32_t>((h >> 40) % 5 == 0 ? (h >> 20) % 61 : 0);
    return static_cast<int32_t>((i % 7) * 3 + noise) % 61;
  }
  void fill(Batch& b, int64_t start) const {
    b.batch = cfg_.train.batch_size;
    b.seq = cfg_.train.seq_len;
    b.inputs.resize(static_cast<size_t>(b.batch * b.seq));
    b.targets.resize(b.inputs.size());
    for (int64_t r = 0; r < b.batch; ++r) {
      for (int64_t t = 0; t < b.seq; ++t) {
        int64_t i = start + r * b.seq + t;
        b.inputs[static_cast<size_t>(r * b.seq + t)] = token(i);
        b.targets[static_cast<size_t>(r * b.seq + t)] = token(i + 1);
      }
    }
  }
  Config cfg_;
  int64_t pos_ = 0;
  int64_t valid_ = 0;
};

std::vector<std::vector<float>> snapshot(MoeModel& m) {
  std::vector<std::vector<float>> out;
  for (auto& p : m.params()) out.push_back(m.backend().download_vec<float>(p.value));
  return out;
}

void expect_bitwise_equal(const std::vector<std::vector<float>>& a,
                          const std::vector<std::vector<float>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size());
    EXPECT_EQ(0, std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)))
        << "parameter " << i << " differs";
  }
}

TEST(Checkpoint, RoundTripRestoresWeightsAndOptimizer) {
  for (const char* arch : {"vanilla", "deepseek"}) {
    SCOPED_TRACE(arch);
    const std::string run = test::make_temp_dir("ckpt-rt");
    Config cfg = tiny_config(run, arch);
    auto be = make_backend("cpu", 2);
    StreamData data_a(cfg), data_b(cfg);
    Trainer a(cfg, *be, data_a, {});
    for (int i = 0; i < 3; ++i) a.train_step();
    const std::string dir = a.save();
    EXPECT_EQ(fs::path(dir).filename(), "step_00000003");
    EXPECT_NO_THROW(verify_checkpoint(dir));
    EXPECT_EQ(load_trainer_state(dir).step, 3);
    EXPECT_EQ(load_checkpoint_config(dir).model.n_layers, cfg.model.n_layers);

    TrainerOptions resume;
    resume.resume_checkpoint = dir;
    Trainer b(cfg, *be, data_b, resume);
    EXPECT_EQ(b.step(), 3);
    expect_bitwise_equal(snapshot(a.model()), snapshot(b.model()));
    // The next update depends on the AdamW moments and the data position: bitwise equal only
    // if both were restored.
    auto ra = a.train_step();
    auto rb = b.train_step();
    EXPECT_EQ(ra.loss.total, rb.loss.total);
    EXPECT_EQ(ra.grad_norm, rb.grad_norm);
    expect_bitwise_equal(snapshot(a.model()), snapshot(b.model()));
  }
}

TEST(Checkpoint, RefusesToOverwriteAndDetectsDamage) {
  const std::string run = test::make_temp_dir("ckpt-dmg");
  Config cfg = tiny_config(run);
  auto be = make_backend("cpu", 2);
  StreamData data(cfg);
  Trainer a(cfg, *be, data, {});
  a.train_step();
  const std::string dir = a.save();
  EXPECT_THROW(a.save(), Error);  // step_00000001 exists already

  const fs::path model = fs::path(dir) / "model.safetensors";
  const std::string good = read_file(model.string());
  // Truncated.
  write_file_synced(model.string(), good.substr(0, good.size() - 12));
  try {
    verify_checkpoint(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  }
  // Same size, one byte changed.
  std::string altered = good;
  altered[altered.size() - 5] ^= 0x40;
  write_file_synced(model.string(), altered);
  try {
    verify_checkpoint(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hash of model.safetensors"), std::string::npos)
        << e.what();
  }
  write_file_synced(model.string(), good);
  EXPECT_NO_THROW(verify_checkpoint(dir));
  fs::remove(fs::path(dir) / "tokenizer.model");
  EXPECT_THROW(verify_checkpoint(dir), Error);
}

// metrics.jsonl without the timing fields (tok_per_s and mfu differ between runs).
std::vector<nlohmann::json> metrics_without_timing(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(fs::path(run) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("tok_per_s");
    j.erase("mfu");
    out.push_back(j);
  }
  return out;
}

TEST(Checkpoint, TrainerResumesBitIdentically) {
  for (const char* arch : {"vanilla", "deepseek"}) {
    SCOPED_TRACE(arch);
    auto be = make_backend("cpu", 2);
    const std::string straight_dir = test::make_temp_dir("resume-straight");
    const std::string split_dir = test::make_temp_dir("resume-split");
    Config straight_cfg = tiny_config(straight_dir, arch);
    {
      StreamData data(straight_cfg);
      Trainer t(straight_cfg, *be, data, {});
      EXPECT_EQ(t.run(), TrainOutcome::kFinished);
    }
    Config split_cfg = tiny_config(split_dir, arch);
    {
      StreamData data(split_cfg);
      TrainerOptions first;
      first.stop_at_step = 3;  // odd: mid-way between validations
      Trainer t(split_cfg, *be, data, first);
      EXPECT_EQ(t.run(), TrainOutcome::kStopped);
    }
    std::vector<std::vector<float>> resumed;
    {
      StreamData data(split_cfg);
      TrainerOptions second;
      second.resume_checkpoint = latest_checkpoint(split_dir);
      Trainer t(split_cfg, *be, data, second);
      EXPECT_EQ(t.step(), 3);
      EXPECT_EQ(t.run(), TrainOutcome::kFinished);
      resumed = snapshot(t.model());
    }
    // Weights: the final checkpoints hold the same bytes.
    const std::string a = read_file(latest_checkpoint(straight_dir) + "/model.safetensors");
    const std::string b = read_file(latest_checkpoint(split_dir) + "/model.safetensors");
    EXPECT_TRUE(a == b) << "model.safetensors differs after resume";
    const std::string oa = read_file(latest_checkpoint(straight_dir) + "/optimizer.safetensors");
    const std::string ob = read_file(latest_checkpoint(split_dir) + "/optimizer.safetensors");
    EXPECT_TRUE(oa == ob) << "optimizer.safetensors differs after resume";
    // Losses and every other logged value.
    auto ma = metrics_without_timing(straight_dir);
    auto mb = metrics_without_timing(split_dir);
    ASSERT_EQ(ma.size(), mb.size());
    for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i], mb[i]) << "record " << i;
    EXPECT_GT(ma.size(), 8u);  // 8 train records + validations
  }
}

TEST(Checkpoint, KeepLastPrunesDuringTraining) {
  const std::string run = test::make_temp_dir("ckpt-keep");
  Config cfg = tiny_config(run);
  cfg.run.save_every = 2;
  cfg.run.keep_last = 2;
  auto be = make_backend("cpu", 2);
  StreamData data(cfg);
  Trainer t(cfg, *be, data, {});
  t.run();
  auto all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 6);
  EXPECT_EQ(all[1].first, 8);
}

TEST(Trainer, GradientAccumulationEqualsOneLargeBatch) {
  // Without auxiliary losses (whose statistics are per micro-batch by definition, docs/model.md §2) and
  // with equal token counts, the mean of the micro-batch gradients is the big batch's gradient.
  auto be = make_backend("cpu", 1);
  Config accum = tiny_config(test::make_temp_dir("accum2"));
  accum.loss.losses = {};
  accum.train.grad_accum = 2;
  accum.train.batch_size = 2;
  Config big = accum;
  big.run.out_dir = test::make_temp_dir("accum1");
  big.train.grad_accum = 1;
  big.train.batch_size = 4;
  StreamData data_a(accum), data_b(big);
  Trainer a(accum, *be, data_a, {});
  Trainer b(big, *be, data_b, {});
  for (int i = 0; i < 2; ++i) {
    auto ra = a.train_step();
    auto rb = b.train_step();
    EXPECT_NEAR(ra.loss.lm, rb.loss.lm, 1e-5);
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 1e-5 * rb.grad_norm);
  }
  auto pa = snapshot(a.model());
  auto pb = snapshot(b.model());
  double max_diff = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    for (size_t j = 0; j < pa[i].size(); ++j) {
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(pa[i][j]) - pb[i][j]));
    }
  }
  // Two AdamW steps of lr <= 1e-2 move a weight by up to ~2e-2; the two orders of summation
  // agree far below that.
  EXPECT_LT(max_diff, 1e-5);
}

TEST(Trainer, GlobalGradNormCoversEveryTrainableParam) {
  auto be = make_backend("cpu", 1);
  Config cfg = tiny_config(test::make_temp_dir("gnorm"), "deepseek");
  StreamData data(cfg);
  Trainer t(cfg, *be, data, {});
  double n_trainable = 0;
  for (auto& p : t.model().params()) {
    be->fill(p.grad, p.trainable ? 0.5 : 100.0);  // non-trainable grads must not count
    if (p.trainable) n_trainable += static_cast<double>(p.value.numel());
  }
  EXPECT_NEAR(t.optimizer().grad_norm(), 0.5 * std::sqrt(n_trainable), 1e-4 * std::sqrt(n_trainable));
}

}  // namespace
}  // namespace moe
