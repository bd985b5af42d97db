// Training loader (deterministic shuffled windows, resumable) and validation set. See loader.h.
#include "data/loader.h"

#include <algorithm>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "core/checked.h"
#include "core/error.h"
#include "data/tokenizer.h"

namespace moe::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, n) by rejection: accept x below the largest multiple of n that fits in 2^64.
// (std::uniform_int_distribution's algorithm is implementation-defined; this one is ours.)
uint64_t bounded_draw(std::mt19937_64& gen, uint64_t n) {
  const uint64_t excess = (std::numeric_limits<uint64_t>::max() % n + 1) % n;  // 2^64 mod n
  while (true) {
    const uint64_t x = gen();
    if (excess == 0 || x <= std::numeric_limits<uint64_t>::max() - excess) return x % n;
  }
}

std::vector<TokenShard> open_shards(const std::vector<std::string>& paths, uint64_t fingerprint,
                                    int64_t vocab_size) {
  std::vector<TokenShard> shards;
  for (const auto& p : paths) shards.push_back(TokenShard::open(p, fingerprint, vocab_size));
  return shards;
}

int64_t get_field(const nlohmann::json& j, const char* key) {
  MOE_USAGE_CHECK(j.is_object() && j.contains(key) && j[key].is_number_integer(),
                  "loader state: expected an integer field '{}', found {}", key, j.dump());
  const int64_t v = j[key].get<int64_t>();
  MOE_USAGE_CHECK(v >= 0, "loader state: '{}' must be >= 0, found {}", key, v);
  return v;
}

}  // namespace

nlohmann::json LoaderState::to_json() const {
  return {{"epoch", epoch}, {"index", index}, {"windows", windows}};
}

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  LoaderState s;
  s.epoch = get_field(j, "epoch");
  s.index = get_field(j, "index");
  s.windows = get_field(j, "windows");
  return s;
}

std::string LoaderState::to_string() const { return to_json().dump(); }

LoaderState LoaderState::from_string(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    MOE_USAGE_FAIL("loader state is not JSON ({}): {}", e.what(), text);
  }
  return from_json(j);
}

TrainLoader::TrainLoader(const std::vector<std::string>& shard_paths, uint64_t fingerprint,
                         int64_t vocab_size, const LoaderOptions& opt)
    : shards_(open_shards(shard_paths, fingerprint, vocab_size)), opt_(opt) {
  MOE_USAGE_CHECK(opt.batch_size > 0 && opt.seq_len > 0,
                  "batch_size and seq_len must be positive, found {} and {}", opt.batch_size,
                  opt.seq_len);
  MOE_USAGE_CHECK(opt.world_size >= 1 && opt.rank >= 0 && opt.rank < opt.world_size,
                  "rank {} outside world size {}", opt.rank, opt.world_size);
  for (const TokenShard& s : shards_) {
    first_window_.push_back(n_windows_);
    n_windows_ += std::max<int64_t>(0, (s.size() - 1) / opt.seq_len);
    n_tokens_ += s.size();
  }
  MOE_USAGE_CHECK(n_windows_ > 0,
                  "the training split ({} tokens in {} shard(s)) is shorter than one window of "
                  "train.seq_len + 1 = {} tokens; use more text or a shorter seq_len",
                  n_tokens_, shards_.size(), opt.seq_len + 1);
}

std::vector<int64_t> TrainLoader::epoch_order(int64_t epoch) const {
  if (opt_.shuffle) return shuffled_order(n_windows_, opt_.seed, epoch);
  std::vector<int64_t> order(static_cast<size_t>(n_windows_));
  for (int64_t i = 0; i < n_windows_; ++i) order[static_cast<size_t>(i)] = i;
  return order;
}

int64_t TrainLoader::window_at(int64_t position) {
  const int64_t epoch = position / n_windows_;
  if (epoch != cached_epoch_) {
    order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  return order_[static_cast<size_t>(position % n_windows_)];
}

void TrainLoader::fill_row(int64_t window, int64_t row, Batch& b) const {
  const auto it = std::upper_bound(first_window_.begin(), first_window_.end(), window) - 1;
  const size_t shard = static_cast<size_t>(it - first_window_.begin());
  const int64_t start = (window - *it) * opt_.seq_len;
  std::vector<int32_t> tokens(static_cast<size_t>(opt_.seq_len + 1));
  shards_[shard].copy(start, opt_.seq_len + 1, tokens.data());
  std::copy(tokens.begin(), tokens.end() - 1, b.inputs.begin() + row * opt_.seq_len);
  std::copy(tokens.begin() + 1, tokens.end(), b.targets.begin() + row * opt_.seq_len);
}

Batch TrainLoader::next() {
  Batch b;
  b.batch = opt_.batch_size;
  b.seq = opt_.seq_len;
  b.inputs.resize(static_cast<size_t>(b.batch * b.seq));
  b.targets.resize(static_cast<size_t>(b.batch * b.seq));
  // The position comes from a checkpoint: every step of it is exact (a forged epoch can put it
  // near the int64 limit).
  const int64_t stride =
      checked_mul<int64_t>(opt_.batch_size, opt_.world_size, "data loader stride");
  const int64_t next = checked_add(position_, stride, "data loader position (checkpoint epoch)");
  const int64_t mine = position_ + opt_.rank * opt_.batch_size;
  for (int64_t r = 0; r < opt_.batch_size; ++r) fill_row(window_at(mine + r), r, b);
  position_ = next;
  return b;
}

LoaderState TrainLoader::state() const {
  return {position_ / n_windows_, position_ % n_windows_, n_windows_};
}

void TrainLoader::restore(const LoaderState& s) {
  MOE_USAGE_CHECK(s.windows == n_windows_,
                  "cannot resume the data loader: the state was saved with {} windows per epoch, "
                  "the training data now has {} (did the corpus, tokenizer or seq_len change?)",
                  s.windows, n_windows_);
  MOE_USAGE_CHECK(s.index >= 0 && s.index < n_windows_ && s.epoch >= 0,
                  "loader state out of range: epoch {}, index {} of {} windows", s.epoch, s.index,
                  n_windows_);
  position_ = checked_add(checked_mul(s.epoch, n_windows_, "loader state: epoch x windows"),
                          s.index, "loader state: epoch x windows + index");
}

ValidSet::ValidSet(const std::vector<std::string>& shard_paths, uint64_t fingerprint,
                   int64_t vocab_size, int64_t batch_size, int64_t seq_len, int32_t pad_id)
    : shards_(open_shards(shard_paths, fingerprint, vocab_size)), batch_size_(batch_size),
      seq_len_(seq_len), pad_id_(pad_id) {
  MOE_USAGE_CHECK(batch_size > 0 && seq_len > 0,
                  "batch_size and seq_len must be positive, found {} and {}", batch_size, seq_len);
  for (size_t s = 0; s < shards_.size(); ++s) {
    const int64_t T = shards_[s].size();
    n_tokens_ += T;
    text_bytes_ += static_cast<int64_t>(shards_[s].header().text_bytes);
    if (T < 2) continue;
    n_targets_ += T - 1;
    for (int64_t covered = 0; covered < T - 1; covered += seq_len) {
      // Targets covered..min(covered + seq, T - 1) - 1 (as positions of the input token).
      Window w{static_cast<int32_t>(s), covered, 0, 0};
      if (covered + seq_len + 1 > T) {  // the tail: align the window to the shard's end
        w.start = std::max<int64_t>(0, T - seq_len - 1);
        w.first_target = covered - w.start;
      }
      w.length = std::min(seq_len + 1, T - w.start);
      windows_.push_back(w);
    }
  }
  n_windows_ = static_cast<int64_t>(windows_.size());
}

int64_t ValidSet::num_batches() const { return (n_windows_ + batch_size_ - 1) / batch_size_; }

Batch ValidSet::batch(int64_t i) const {
  MOE_CHECK(i >= 0 && i < num_batches(), "validation batch {} outside [0, {})", i, num_batches());
  Batch b;
  b.batch = std::min(batch_size_, n_windows_ - i * batch_size_);
  b.seq = seq_len_;
  b.inputs.assign(static_cast<size_t>(b.batch * b.seq), pad_id_);
  b.targets.assign(static_cast<size_t>(b.batch * b.seq), -1);
  std::vector<int32_t> tokens(static_cast<size_t>(seq_len_ + 1));
  for (int64_t r = 0; r < b.batch; ++r) {
    const Window& w = windows_[static_cast<size_t>(i * batch_size_ + r)];
    shards_[static_cast<size_t>(w.shard)].copy(w.start, w.length, tokens.data());
    int32_t* in = b.inputs.data() + r * seq_len_;
    int32_t* tg = b.targets.data() + r * seq_len_;
    for (int64_t t = 0; t + 1 < w.length; ++t) {
      in[t] = tokens[static_cast<size_t>(t)];
      if (t >= w.first_target) tg[t] = tokens[static_cast<size_t>(t + 1)];
    }
  }
  return b;
}

std::vector<Batch> ValidSet::first_batches(int64_t max_batches) const {
  const int64_t n = max_batches <= 0 ? num_batches() : std::min(max_batches, num_batches());
  std::vector<Batch> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(batch(i));
  return out;
}

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 gen(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch))));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(bounded_draw(gen, static_cast<uint64_t>(i + 1)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

int64_t target_bytes(const Batch& b, const Tokenizer& tok) {
  int64_t n = 0;
  for (int32_t t : b.targets) {
    if (t >= 0) n += tok.token_bytes(t);
  }
  return n;
}

}  // namespace moe::data
