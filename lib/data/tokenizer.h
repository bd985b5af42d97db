// The sentencepiece tokenizer of moe-spec (docs/model.md §3): load a .model, or train a BPE model with
// byte_fallback, identity normalization, add_dummy_prefix off, remove_extra_whitespaces off,
// split_digits on, unk 0 / bos 1 / eos 2 / no pad. With these settings decode(encode(x)) == x for
// UTF-8 text, with one exception inherited from sentencepiece: the character U+2581 ('▁', the
// library's internal whitespace mark) in the input decodes back as a space.
//
// Training input: sentencepiece reads "sentences" of at most max_sentence_length bytes, so
// documents are cut at newlines and long lines at whitespace (or UTF-8 character boundaries)
// into pieces of at most kMaxTrainingSentenceBytes; no piece therefore spans a newline, and the
// trained vocabulary never contains "\n" (newline is encoded by byte fallback as <0x0A>).
// TrainingSample keeps an evenly spread subset of the lines up to the byte budget.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moe::data {

constexpr size_t kMaxTrainingSentenceBytes = 4096;  // below sentencepiece's default 4192

class Tokenizer {
 public:
  // Loads a sentencepiece model file; a usage error names the file when it is not one.
  static Tokenizer load(const std::string& path);
  // From the bytes of a serialized ModelProto (a .model file's content).
  static Tokenizer from_serialized(std::string serialized_model, const std::string& origin);

  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(token_bytes_.size()); }
  int32_t eos_id() const { return eos_id_; }
  int32_t bos_id() const;
  int32_t unk_id() const;
  const std::string& piece(int32_t id) const;

  // FNV-1a 64 of the serialized model: identifies the tokenizer in shard headers and manifests.
  uint64_t fingerprint() const { return fingerprint_; }
  std::string fingerprint_hex() const;
  const std::string& serialized() const { return serialized_; }
  const std::string& origin() const { return origin_; }

  // UTF-8 bytes the token stands for in decoded text (0 for control tokens such as eos). With
  // identity normalization and no dummy prefix, the sum over encode(x) equals x.size(), which
  // gives the byte counts of token ranges for bits per byte.
  int64_t token_bytes(int32_t id) const { return token_bytes_.at(static_cast<size_t>(id)); }
  // True when no vocabulary piece contains '\n' (true for every model train_tokenizer makes):
  // then a text can be encoded in pieces cut after newlines with the same result as a whole.
  bool newline_is_boundary() const { return newline_is_boundary_; }
  // True when the whitespace mark U+2581 only ever starts a piece (true for models trained with
  // sentencepiece's default split_by_whitespace, as ours are): then no BPE merge crosses the
  // boundary before a space, and a text can be encoded word by word (CachedEncoder).
  bool space_is_boundary() const { return space_is_boundary_; }
  bool has_byte_fallback() const { return has_byte_fallback_; }

  // Writes the model atomically (temp file + rename).
  void save(const std::string& path) const;

 private:
  Tokenizer() = default;
  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string serialized_, origin_;
  uint64_t fingerprint_ = 0;
  int32_t eos_id_ = -1;
  std::vector<int64_t> token_bytes_;
  bool newline_is_boundary_ = true, space_is_boundary_ = true, has_byte_fallback_ = false;
};

// Encodes like Tokenizer::encode, faster on natural text: when space_is_boundary(), the text is
// cut before every space and each short word's ids are memoised (natural text repeats words
// heavily). The output is identical to Tokenizer::encode by construction (merges never cross a
// cut) and by test. One instance per thread (not thread-safe); the memo is bounded.
class CachedEncoder {
 public:
  explicit CachedEncoder(const Tokenizer& tok) : tok_(tok) {}
  void encode_append(std::string_view text, std::vector<int32_t>& out);

 private:
  const Tokenizer& tok_;
  std::unordered_map<std::string, std::vector<int32_t>> memo_;
};

// Collects tokenizer training sentences from documents, keeping about `budget_bytes` of the
// `total_bytes` offered, spread evenly over the corpus (a deterministic error-diffusion
// selection over lines, so every part of the corpus is represented).
class TrainingSample {
 public:
  TrainingSample(int64_t budget_bytes, int64_t total_bytes);
  void add_document(std::string_view text);
  const std::vector<std::string>& sentences() const { return sentences_; }
  int64_t bytes() const { return kept_bytes_; }

 private:
  void offer(std::string_view sentence);
  double keep_ratio_;
  double credit_ = 0;
  int64_t kept_bytes_ = 0;
  std::vector<std::string> sentences_;
};

// Splits `text` into training sentences: at newlines (dropped), then lines longer than
// max_bytes at the last whitespace or UTF-8 character boundary before the limit.
std::vector<std::string_view> split_training_sentences(std::string_view text, size_t max_bytes);

// Trains the docs/model.md §3 BPE model on the sentences. Errors (e.g. a vocabulary larger than the
// sample supports) are usage errors naming the data.tokenizer_vocab_size setting.
// The result is a pure function of (sentences, vocab_size): the trainer runs with one thread
// because sentencepiece records num_threads in the model file (so the fingerprint would change
// from machine to machine) while its BPE trainer gains nothing from more threads (measured:
// identical pieces and time with 1, 2 and 4).
Tokenizer train_tokenizer(const std::vector<std::string>& sentences, int64_t vocab_size);
// The first version's signature, kept for its callers: the thread count is ignored (above).
inline Tokenizer train_tokenizer(const std::vector<std::string>& sentences, int64_t vocab_size,
                                 int /*threads*/) {
  return train_tokenizer(sentences, vocab_size);
}

uint64_t fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace moe::data
