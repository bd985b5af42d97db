// Batches from token shards: the shuffled, resumable training loader and the fixed, sequential
// validation set.
//
// Training windows: each shard of T tokens gives floor((T - 1) / seq_len) windows of seq_len + 1
// tokens at stride seq_len (inputs = window[0..seq), targets = window[1..seq]); the windows of
// all shards are numbered in shard order, and the tail of a shard too short for a window is not
// trained on. Every epoch visits every window once, in an order drawn from (seed, epoch):
// Fisher-Yates driven by std::mt19937_64 (whose output the C++ standard fixes) with our own
// unbiased bounded draw, so the order is the same on every platform and standard library.
// Batches run across epoch boundaries: a batch is the next batch_size windows of the endless
// sequence epoch 0, epoch 1, ... (a corpus smaller than one batch still trains).
//
// Data parallelism: with world_size W, each step consumes W * batch_size windows and rank r takes
// the r-th slice, so W ranks x 1 micro-batch see exactly the windows that 1 rank x W accumulated
// micro-batches sees. The state (epoch, index) is the same on every rank.
//
// Validation: windows at stride seq_len over each validation shard in order, covering every
// target exactly once. The last window of a shard is aligned to the shard's end instead of being
// padded, so every input is real text; its targets already scored by the previous window are -1
// (ignored by the model). Only a shard shorter than one window is padded (inputs pad_id, targets
// -1). The last batch may hold fewer rows. batch(i) is a pure function of i: every evaluation
// sees the same batches. Metrics that average over input positions (routing) should skip the
// positions whose target is -1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "data/shards.h"
#include "model/model.h"

namespace moe::data {

class Tokenizer;

// Position of the training loader: the next window is number `index` of epoch `epoch`'s order.
// `windows` (windows per epoch) is recorded so a restore onto different data is refused.
struct LoaderState {
  int64_t epoch = 0;
  int64_t index = 0;
  int64_t windows = 0;

  nlohmann::json to_json() const;
  static LoaderState from_json(const nlohmann::json& j);  // usage error naming a bad field
  std::string to_string() const;                          // compact JSON
  static LoaderState from_string(const std::string& s);
  bool operator==(const LoaderState& o) const {
    return epoch == o.epoch && index == o.index && windows == o.windows;
  }
};

struct LoaderOptions {
  int64_t batch_size = 8;
  int64_t seq_len = 128;
  uint64_t seed = 1234;
  bool shuffle = true;  // false: windows in corpus order every epoch
  int rank = 0;
  int world_size = 1;
};

class TrainLoader {
 public:
  TrainLoader(const std::vector<std::string>& shard_paths, uint64_t fingerprint,
              int64_t vocab_size, const LoaderOptions& opt);

  Batch next();  // the next batch (advances the state)
  LoaderState state() const;
  void restore(const LoaderState& s);  // usage error when s.windows differs from ours

  int64_t windows_per_epoch() const { return n_windows_; }
  int64_t tokens() const { return n_tokens_; }
  // The window order of an epoch (a permutation of [0, windows_per_epoch)).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  void fill_row(int64_t window, int64_t row, Batch& b) const;
  int64_t window_at(int64_t position);  // position = epoch * n_windows + index

  std::vector<TokenShard> shards_;
  std::vector<int64_t> first_window_;  // per shard, prefix sums of window counts
  LoaderOptions opt_;
  int64_t n_windows_ = 0, n_tokens_ = 0;
  int64_t position_ = 0;               // windows consumed by all ranks so far
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

class ValidSet {
 public:
  ValidSet(const std::vector<std::string>& shard_paths, uint64_t fingerprint,
           int64_t vocab_size, int64_t batch_size, int64_t seq_len, int32_t pad_id = 2);

  bool empty() const { return n_windows_ == 0; }
  int64_t num_batches() const;
  Batch batch(int64_t i) const;
  // The first min(max_batches, num_batches()) batches; max_batches <= 0: all of them.
  std::vector<Batch> first_batches(int64_t max_batches) const;

  int64_t tokens() const { return n_tokens_; }          // in the shards
  int64_t target_count() const { return n_targets_; }   // positions predicted over all batches
  int64_t text_bytes() const { return text_bytes_; }    // UTF-8 bytes of the split's text

 private:
  struct Window {
    int32_t shard;
    int64_t start;         // first token of the window in the shard
    int64_t length;        // real tokens in the window (seq_len + 1 unless the shard is shorter)
    int64_t first_target;  // targets before this row position were scored by the previous window
  };
  std::vector<TokenShard> shards_;
  std::vector<Window> windows_;
  int64_t batch_size_, seq_len_, n_windows_ = 0;
  int64_t n_tokens_ = 0, n_targets_ = 0, text_bytes_ = 0;
  int32_t pad_id_ = 2;
};

// The shuffled order of n windows in an epoch (see the file comment): a permutation of [0, n)
// that depends only on (n, seed, epoch).
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, int64_t epoch);

// UTF-8 bytes spelled by a batch's targets (ignored targets count 0): the bits-per-byte
// denominator of that batch, so bpb over the first eval_batches batches is exact too.
int64_t target_bytes(const Batch& b, const Tokenizer& tok);

}  // namespace moe::data
