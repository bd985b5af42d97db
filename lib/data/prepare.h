// The data pipeline's entry point for moetrain / moeeval: prepare_data() turns a DataConfig into
// a tokenizer and token shards on disk, reusing earlier work when nothing changed.
//
//   auto data = moe::data::prepare_data(cfg.data, cfg.run.out_dir);
//   cfg.model.vocab_size = moe::data::resolve_vocab_size(cfg.model.vocab_size, data.vocab_size);
//   moe::data::TrainLoader loader(data.train_shards, data.tokenizer->fingerprint(),
//                                 data.vocab_size, {cfg.train.batch_size, cfg.train.seq_len,
//                                 cfg.train.seed, cfg.data.shuffle});
//   moe::data::ValidSet valid(data.valid_shards, ...);   // see loader.h
//
// What it does, in order:
//  1. Resolves data.train / data.valid (files, directories, globs; corpus.h).
//  2. Tokenizer: loads data.tokenizer when given; otherwise trains one on up to
//     data.tokenizer_train_bytes of the training text and keeps it in the cache as
//     tokenizer.model (+ tokenizer.json describing what it was trained on). A cached tokenizer
//     is reused when it was trained on the same files (paths and sizes) and settings; a cache
//     holding a tokenizer trained on something else is refused (usage error) rather than
//     overwritten, because shards and checkpoints of another run may depend on it.
//  3. Shards: reuses <cache>/manifest.json's shards when the source list (paths, sizes, mtimes),
//     split settings and tokenizer fingerprint match and every shard header checks out;
//     re-tokenizes when only the sources changed; refuses (usage error naming the manifest,
//     expected vs found fingerprint and vocab) a cache made with another tokenizer.
//  4. Copies the tokenizer to <out_dir>/tokenizer.model (refusing to replace a different one:
//     a run directory keeps the tokenizer its checkpoints were trained with).
// The cache directory is data.cache_dir, or <out_dir>/data when that is empty. All files are
// written atomically. Call it from one process (rank 0) and let the others wait, then open the
// returned paths; concurrent preparations of one cache directory are not coordinated.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/tokenizer.h"

namespace moe::data {

struct SplitInfo {
  std::vector<std::string> shards;  // absolute or cache-relative paths that TokenShard::open takes
  int64_t tokens = 0;               // total tokens of the split (context tokens included)
  int64_t text_bytes = 0;           // UTF-8 bytes of the split's text (bits-per-byte denominator)
  int64_t docs = 0;
};

struct PreparedData {
  std::shared_ptr<const Tokenizer> tokenizer;
  std::string tokenizer_path;  // <out_dir>/tokenizer.model
  std::string cache_dir;
  int64_t vocab_size = 0;
  uint64_t fingerprint = 0;
  SplitInfo train, valid;      // valid.shards is empty when there is no validation split
  bool reused_shards = false;  // true when the cache was valid and nothing was re-tokenized
  bool trained_tokenizer = false;  // true when this call trained the tokenizer
};

struct PrepareOptions {
  int threads = 0;                              // <= 0: OpenMP maximum
  int64_t shard_max_tokens = int64_t{1} << 28;  // shards close at a document boundary past this
};

PreparedData prepare_data(const DataConfig& cfg, const std::string& out_dir,
                          const PrepareOptions& opt = {});

// The model's vocabulary: the tokenizer's when model.vocab_size is 0; a configured value
// smaller than the tokenizer's is a usage error (token ids would not fit); a larger one is kept
// (padding rows, e.g. to a multiple of 64).
int64_t resolve_vocab_size(int64_t configured, int64_t tokenizer_vocab);

// Where prepare_data keeps the cache for this config.
std::string resolve_cache_dir(const DataConfig& cfg, const std::string& out_dir);

}  // namespace moe::data
