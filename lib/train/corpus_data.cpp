// The adapter from lib/data's prepared shards and loaders to the trainer's TrainingData.
#include "train/corpus_data.h"

#include <algorithm>
#include <fstream>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"

#include "data/loader.h"
#include "data/prepare.h"

namespace moe {
namespace {

class CorpusData final : public TrainingData {
 public:
  CorpusData(const Config& cfg, const std::string& tokenizer_override) {
    DataConfig dcfg = cfg.data;
    if (!tokenizer_override.empty()) dcfg.tokenizer = tokenizer_override;
    prepared_ = data::prepare_data(dcfg, cfg.run.out_dir);
    MOE_USAGE_CHECK(prepared_.train.tokens > 0, "data.train: the training corpus holds no text "
                    "(every document is empty)");
    data::LoaderOptions opt;
    opt.batch_size = cfg.train.batch_size;
    opt.seq_len = cfg.train.seq_len;
    opt.seed = static_cast<uint64_t>(cfg.train.seed);
    opt.shuffle = cfg.data.shuffle;
    train_ = std::make_unique<data::TrainLoader>(prepared_.train.shards, prepared_.fingerprint,
                                                 prepared_.vocab_size, opt);
    MOE_USAGE_CHECK(train_->windows_per_epoch() > 0, "data.train: the training corpus has {} "
                    "tokens, fewer than one sequence of train.seq_len + 1 = {}",
                    train_->tokens(), cfg.train.seq_len + 1);
    if (!prepared_.valid.shards.empty()) {
      valid_ = std::make_unique<data::ValidSet>(prepared_.valid.shards, prepared_.fingerprint,
                                                prepared_.vocab_size, cfg.train.batch_size,
                                                cfg.train.seq_len, prepared_.tokenizer->eos_id());
    }
    spdlog::info("data: {} training tokens ({} windows of {}), {} validation tokens, vocab {}{}",
                 prepared_.train.tokens, train_->windows_per_epoch(), cfg.train.seq_len,
                 prepared_.valid.tokens, prepared_.vocab_size,
                 prepared_.reused_shards ? " (cached shards)" : "");
  }

  int64_t vocab_size() const override { return prepared_.vocab_size; }
  std::string tokenizer_model_bytes() const override { return prepared_.tokenizer->serialized(); }
  // The tokenizer fingerprint, and per shard its size and the hash of its first and last MiB
  // (reading every shard in full would cost minutes at the paper's scale before step 1).
  uint64_t content_hash() const override {
    std::string key = std::to_string(prepared_.fingerprint) + "/" +
                      std::to_string(prepared_.train.tokens);
    for (const std::string& path : prepared_.train.shards) {
      std::ifstream in(path, std::ios::binary | std::ios::ate);
      MOE_CHECK(in.good(), "data: cannot read the token shard '{}'", path);
      const int64_t size = static_cast<int64_t>(in.tellg());
      const int64_t span = std::min<int64_t>(size, int64_t{1} << 20);
      std::string head(static_cast<size_t>(span), '\0'), tail = head;
      in.seekg(0);
      in.read(head.data(), span);
      in.seekg(size - span);
      in.read(tail.data(), span);
      key += fmt::format("/{}:{:016x}:{:016x}", size, hash_bytes(head.data(), head.size()),
                         hash_bytes(tail.data(), tail.size()));
    }
    return hash_bytes(key.data(), key.size());
  }
  void next_train_batch(Batch& out) override { out = train_->next(); }
  nlohmann::json train_state() const override { return train_->state().to_json(); }
  void restore_train_state(const nlohmann::json& state) override {
    train_->restore(data::LoaderState::from_json(state));
  }
  void reset_valid() override { next_valid_ = 0; }
  bool next_valid_batch(Batch& out) override {
    if (!valid_ || next_valid_ >= valid_->num_batches()) return false;
    out = valid_->batch(next_valid_++);
    return true;
  }
  int64_t target_bytes(const Batch& batch) const override {
    return data::target_bytes(batch, *prepared_.tokenizer);
  }

 private:
  data::PreparedData prepared_;
  std::unique_ptr<data::TrainLoader> train_;
  std::unique_ptr<data::ValidSet> valid_;
  int64_t next_valid_ = 0;
};

}  // namespace

std::unique_ptr<TrainingData> open_corpus_data(const Config& cfg,
                                               const std::string& tokenizer_override) {
  return std::make_unique<CorpusData>(cfg, tokenizer_override);
}

}  // namespace moe
