// Token shards: binary files of token ids with a fixed 64-byte little-endian header, written
// once by the data preparation and memory-mapped by the loaders.
//
//   offset size field
//        0    8 magic "MOETOKS\0"
//        8    4 version (1)
//       12    4 bytes per token: 2 (uint16, vocab <= 65536) or 4 (uint32)
//       16    8 tokenizer fingerprint (Tokenizer::fingerprint)
//       24    8 vocab size
//       32    8 token count
//       40    8 text bytes: UTF-8 bytes of the text whose tokens the shard holds (for bits/byte)
//       48    8 document count
//       56    8 reserved (0)
//       64      tokens
//
// Stream layout (docs/model.md §3): a shard is [c] + tokens(doc_1) + [eos] + tokens(doc_2) + [eos] ...
// where the first token c is context only: it is eos for document streams, so every document
// follows an eos and even the first document's first token is a prediction target. (A single
// book split by tokens starts its validation shard with the last training token instead.)
// "text bytes" counts the text of tokens 1..N-1, i.e. exactly the text the targets spell out.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/atomic_file.h"

namespace moe::data {

struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_width;  // bytes per token
  uint64_t fingerprint;
  uint64_t vocab_size;
  uint64_t token_count;
  uint64_t text_bytes;
  uint64_t doc_count;
  uint64_t reserved;
};
static_assert(sizeof(ShardHeader) == 64, "the shard header is 64 bytes");

constexpr uint32_t kShardVersion = 1;
uint32_t token_width_for_vocab(int64_t vocab_size);  // 2 or 4

// Reads and checks the header (magic, version, width, file size). Usage error naming the file.
ShardHeader read_shard_header(const std::string& path);

// Throws a usage error naming the shard when it was made with another tokenizer or vocab.
void check_shard_matches(const ShardHeader& h, const std::string& path, uint64_t fingerprint,
                         int64_t vocab_size);

// Writes one shard atomically. Tokens are appended; finish() fills the header and renames.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, uint64_t fingerprint, int64_t vocab_size);
  void append(const int32_t* tokens, size_t n);
  void add_text(uint64_t text_bytes, uint64_t docs) {
    text_bytes_ += text_bytes;
    docs_ += docs;
  }
  uint64_t token_count() const { return tokens_; }
  ShardHeader finish();

 private:
  AtomicFileWriter file_;
  std::string path_;
  uint64_t fingerprint_;
  int64_t vocab_size_;
  uint32_t width_;
  uint64_t tokens_ = 0, text_bytes_ = 0, docs_ = 0;
  std::vector<uint8_t> buf_;
};

// A read-only memory map of one shard. Copies are cheap (shared mapping).
class TokenShard {
 public:
  // Maps the file and checks it against the expected tokenizer fingerprint and vocab size.
  static TokenShard open(const std::string& path, uint64_t fingerprint, int64_t vocab_size);

  const ShardHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(header_.token_count); }
  int32_t at(int64_t i) const;
  // Copies tokens [start, start + n) into out (bounds checked).
  void copy(int64_t start, int64_t n, int32_t* out) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> map_;
  ShardHeader header_{};
  std::string path_;
  const uint8_t* tokens_ = nullptr;
};

}  // namespace moe::data
