// Encoding a corpus into token shards, with the train/validation split.
//
// Split (when data.valid is empty): document d is held out for validation when
// u(d) < valid_fraction, where u(d) in [0, 1) comes from a fixed hash (splitmix64) of d. The
// split is a property of the corpus, not of train.seed, so runs with different seeds are scored
// on the same held-out text. With >= 2 documents at least one is held out (the smallest u) and
// at least one is kept for training (the largest u). A corpus of a single document (a book) is
// split by tokens instead: the last ceil(valid_fraction * T) of its T tokens are validation.
// valid_fraction == 0 means no validation split.
//
// Encoding is parallel (OpenMP) over documents and over newline-aligned chunks of long
// documents (only when the tokenizer has no piece containing '\n', which makes chunked encoding
// equal to whole-document encoding); results are appended in corpus order, so the shards are
// byte-identical whatever the thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/tokenizer.h"

namespace moe::data {

struct SplitStats {
  std::vector<std::string> shards;  // file names, relative to the cache directory
  int64_t tokens = 0;               // in all shards, context tokens included
  int64_t text_bytes = 0;           // UTF-8 bytes of the text the targets spell out
  int64_t docs = 0;
};

struct BuildOptions {
  std::string jsonl_field = "text";
  double valid_fraction = 0.02;     // used when the valid sources are empty
  int64_t shard_max_tokens = int64_t{1} << 28;  // a shard closes at a document boundary past this
  int64_t total_bytes = 0;          // of all sources, for progress (0: unknown)
  int threads = 0;                  // <= 0: OpenMP maximum
};

struct BuildResult {
  SplitStats train, valid;
  double seconds = 0;
  int64_t source_bytes = 0;
};

// Writes <cache_dir>/train-NNNNN.bin and valid-NNNNN.bin (atomically, one by one).
BuildResult build_shards(const Tokenizer& tok, const std::vector<SourceFile>& train_sources,
                         const std::vector<SourceFile>& valid_sources,
                         const std::string& cache_dir, const BuildOptions& opt);

// The held-out flags of n documents (see the file comment).
std::vector<uint8_t> holdout_documents(int64_t n_docs, double valid_fraction);

// Encodes one text, in parallel chunks when it is long and the tokenizer allows it.
std::vector<int32_t> encode_text(const Tokenizer& tok, const std::string& text);

}  // namespace moe::data
