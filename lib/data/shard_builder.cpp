// Corpus -> token shards, with the train/validation split. See shard_builder.h.
#include "data/shard_builder.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <memory>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/shards.h"

namespace moe::data {
namespace {

constexpr size_t kChunkBytes = 64 << 10;        // parallel encoding granularity inside a document
constexpr size_t kBatchBytes = 16 << 20;        // documents encoded together (and progress step)
constexpr uint64_t kHoldoutSalt = 0x6d6f652d73706563ULL;  // "moe-spec"

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double unit_hash(int64_t i) {
  return static_cast<double>(splitmix64(static_cast<uint64_t>(i) ^ kHoldoutSalt) >> 11) *
         0x1.0p-53;
}

struct Piece {
  size_t doc, begin, end;
};

// Cuts each document into pieces that end right after a newline, about kChunkBytes each (only
// when the tokenizer never merges across '\n'; otherwise one piece per document).
std::vector<Piece> cut_pieces(const Tokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<Piece> pieces;
  for (size_t d = 0; d < texts.size(); ++d) {
    const std::string& t = texts[d];
    size_t begin = 0;
    while (tok.newline_is_boundary() && t.size() - begin > 2 * kChunkBytes) {
      const size_t nl = t.find('\n', begin + kChunkBytes);
      if (nl == std::string::npos) break;
      pieces.push_back({d, begin, nl + 1});
      begin = nl + 1;
    }
    pieces.push_back({d, begin, t.size()});
  }
  return pieces;
}

// Encodes the texts in parallel; the result does not depend on the thread count.
std::vector<std::vector<int32_t>> encode_texts(const Tokenizer& tok,
                                               const std::vector<std::string>& texts,
                                               int threads) {
  const std::vector<Piece> pieces = cut_pieces(tok, texts);
  std::vector<std::vector<int32_t>> encoded(pieces.size());
  std::exception_ptr failure;
  const int64_t n = static_cast<int64_t>(pieces.size());
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    CachedEncoder encoder(tok);  // one memo per thread; results do not depend on it
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      try {
        const Piece& p = pieces[static_cast<size_t>(i)];
        encoder.encode_append(std::string_view(texts[p.doc]).substr(p.begin, p.end - p.begin),
                              encoded[static_cast<size_t>(i)]);
      } catch (...) {
#pragma omp critical(moe_encode_failure)
        if (!failure) failure = std::current_exception();
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
  std::vector<std::vector<int32_t>> out(texts.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    auto& dst = out[pieces[i].doc];
    dst.insert(dst.end(), encoded[i].begin(), encoded[i].end());
    std::vector<int32_t>().swap(encoded[i]);
  }
  return out;
}

int64_t sum_token_bytes(const Tokenizer& tok, const int32_t* t, size_t n) {
  int64_t b = 0;
  for (size_t i = 0; i < n; ++i) b += tok.token_bytes(t[i]);
  return b;
}

// Writes one split as a sequence of shards, each opened with an eos context token.
class ShardSetWriter {
 public:
  ShardSetWriter(std::string cache_dir, std::string split, const Tokenizer& tok, int64_t max_tokens)
      : dir_(std::move(cache_dir)), split_(std::move(split)), tok_(tok), max_tokens_(max_tokens) {}

  void add_document(const std::vector<int32_t>& tokens, int64_t text_bytes) {
    open_if_needed(tok_.eos_id());
    const int32_t eos = tok_.eos_id();
    writer_->append(tokens.data(), tokens.size());
    writer_->append(&eos, 1);
    writer_->add_text(static_cast<uint64_t>(text_bytes), 1);
    if (static_cast<int64_t>(writer_->token_count()) >= max_tokens_) close();
  }

  // A raw token range (a book's split), opened with `context`, in a shard of its own.
  void add_range(int32_t context, const int32_t* tokens, size_t n, bool end_with_eos) {
    close();
    open_if_needed(context);
    writer_->append(tokens, n);
    if (end_with_eos) {
      const int32_t eos = tok_.eos_id();
      writer_->append(&eos, 1);
    }
    writer_->add_text(static_cast<uint64_t>(sum_token_bytes(tok_, tokens, n)), 1);
    close();
  }

  SplitStats finish() {
    close();
    return stats_;
  }

 private:
  void open_if_needed(int32_t context) {
    if (writer_) return;
    const std::string name = fmt::format("{}-{:05d}.bin", split_, stats_.shards.size());
    writer_ = std::make_unique<ShardWriter>(dir_ + "/" + name, tok_.fingerprint(),
                                            tok_.vocab_size());
    writer_->append(&context, 1);
    stats_.shards.push_back(name);
  }
  void close() {
    if (!writer_) return;
    const ShardHeader h = writer_->finish();
    stats_.tokens += static_cast<int64_t>(h.token_count);
    stats_.text_bytes += static_cast<int64_t>(h.text_bytes);
    stats_.docs += static_cast<int64_t>(h.doc_count);
    writer_.reset();
  }

  std::string dir_, split_;
  const Tokenizer& tok_;
  int64_t max_tokens_;
  std::unique_ptr<ShardWriter> writer_;
  SplitStats stats_;
};

// Streams the documents of `sources` in batches of about kBatchBytes and hands each encoded
// document, in order, to `sink(index, tokens, text_bytes)`. Logs progress.
class BatchEncoder {
 public:
  BatchEncoder(const Tokenizer& tok, const BuildOptions& opt) : tok_(tok), opt_(opt) {}

  template <typename Sink>
  void run(const std::vector<SourceFile>& sources, Sink&& sink) {
    std::vector<std::string> batch;
    size_t batch_bytes = 0;
    auto flush = [&] {
      const auto encoded = encode_texts(tok_, batch, opt_.threads);
      for (size_t i = 0; i < batch.size(); ++i) {
        sink(next_doc_++, encoded[i], static_cast<int64_t>(batch[i].size()));
      }
      done_bytes_ += static_cast<int64_t>(batch_bytes);
      batch.clear();
      batch_bytes = 0;
      log_progress();
    };
    for_each_document(sources, opt_.jsonl_field, [&](Document&& doc) {
      batch_bytes += doc.text.size();
      batch.push_back(std::move(doc.text));
      if (batch_bytes >= kBatchBytes) flush();
    });
    if (!batch.empty()) flush();
  }
  int64_t done_bytes() const { return done_bytes_; }
  void restart_numbering() { next_doc_ = 0; }

 private:
  void log_progress() const {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double mb = static_cast<double>(done_bytes_) / 1e6;
    if (opt_.total_bytes > 0) {
      spdlog::info("tokenized {:.1f} / {:.1f} MB ({:.0f}%), {:.2f} MB/s", mb,
                   static_cast<double>(opt_.total_bytes) / 1e6,
                   100.0 * static_cast<double>(done_bytes_) / static_cast<double>(opt_.total_bytes),
                   s > 0 ? mb / s : 0.0);
    } else {
      spdlog::info("tokenized {:.1f} MB, {:.2f} MB/s", mb, s > 0 ? mb / s : 0.0);
    }
  }

  const Tokenizer& tok_;
  const BuildOptions& opt_;
  int64_t next_doc_ = 0, done_bytes_ = 0;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

int64_t count_documents(const std::vector<SourceFile>& sources, const std::string& field) {
  int64_t n = 0;
  for_each_document(sources, field, [&](Document&&) { ++n; });
  return n;
}

// The single-document corpus: the last ceil(f * T) tokens become the validation shard.
void split_single_document(const Tokenizer& tok, const std::vector<int32_t>& tokens,
                           double valid_fraction, ShardSetWriter& train, ShardSetWriter& valid) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  MOE_USAGE_CHECK(T >= 2, "the corpus is a single document of {} token(s): too short to hold "
                  "out a validation part (data.valid_fraction)", T);
  int64_t n_valid = static_cast<int64_t>(std::ceil(valid_fraction * static_cast<double>(T)));
  n_valid = std::min(std::max<int64_t>(n_valid, 1), T - 1);
  const int64_t cut = T - n_valid;
  train.add_range(tok.eos_id(), tokens.data(), static_cast<size_t>(cut), /*end_with_eos=*/false);
  valid.add_range(tokens[static_cast<size_t>(cut - 1)], tokens.data() + cut,
                  static_cast<size_t>(n_valid), /*end_with_eos=*/true);
}

}  // namespace

std::vector<uint8_t> holdout_documents(int64_t n_docs, double valid_fraction) {
  std::vector<uint8_t> held(static_cast<size_t>(std::max<int64_t>(n_docs, 0)), 0);
  if (n_docs < 2 || valid_fraction <= 0) return held;
  int64_t n_held = 0, lowest = 0, highest = 0;
  for (int64_t d = 0; d < n_docs; ++d) {
    const double u = unit_hash(d);
    if (u < valid_fraction) {
      held[static_cast<size_t>(d)] = 1;
      ++n_held;
    }
    if (u < unit_hash(lowest)) lowest = d;
    if (u > unit_hash(highest)) highest = d;
  }
  if (n_held == 0) held[static_cast<size_t>(lowest)] = 1;
  if (n_held == n_docs) held[static_cast<size_t>(highest)] = 0;
  return held;
}

std::vector<int32_t> encode_text(const Tokenizer& tok, const std::string& text) {
  std::vector<std::string> one{text};
  return std::move(encode_texts(tok, one, 0)[0]);
}

BuildResult build_shards(const Tokenizer& tok, const std::vector<SourceFile>& train_sources,
                         const std::vector<SourceFile>& valid_sources,
                         const std::string& cache_dir, const BuildOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  ShardSetWriter train(cache_dir, "train", tok, opt.shard_max_tokens);
  ShardSetWriter valid(cache_dir, "valid", tok, opt.shard_max_tokens);
  BatchEncoder encoder(tok, opt);
  const bool hold_out = valid_sources.empty() && opt.valid_fraction > 0;
  const int64_t n_train_docs = hold_out ? count_documents(train_sources, opt.jsonl_field) : 0;
  MOE_USAGE_CHECK(!hold_out || n_train_docs > 0, "the training corpus holds no text");

  if (hold_out && n_train_docs == 1) {
    encoder.run(train_sources, [&](int64_t, const std::vector<int32_t>& tokens, int64_t) {
      split_single_document(tok, tokens, opt.valid_fraction, train, valid);
    });
  } else {
    const std::vector<uint8_t> held =
        hold_out ? holdout_documents(n_train_docs, opt.valid_fraction) : std::vector<uint8_t>{};
    encoder.run(train_sources,
                [&](int64_t d, const std::vector<int32_t>& tokens, int64_t bytes) {
                  const bool to_valid = hold_out && held.at(static_cast<size_t>(d)) != 0;
                  (to_valid ? valid : train).add_document(tokens, bytes);
                });
    encoder.restart_numbering();
    encoder.run(valid_sources, [&](int64_t, const std::vector<int32_t>& tokens, int64_t bytes) {
      valid.add_document(tokens, bytes);
    });
  }
  BuildResult r;
  r.train = train.finish();
  r.valid = valid.finish();
  r.source_bytes = encoder.done_bytes();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace moe::data
