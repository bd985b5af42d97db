// Sentencepiece wrapper: loading, training (docs/model.md §3 settings), encode/decode, fingerprint and
// per-token byte lengths. See tokenizer.h.
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/atomic_file.h"

namespace moe::data {
namespace {

// The sentencepiece whitespace mark U+2581 in UTF-8.
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

// Feeds the sampled sentences to the sentencepiece trainer without a temporary file.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  size_t i_ = 0;
};

int64_t bytes_of_piece(const std::string& piece) {
  // Each U+2581 mark decodes to one space: 3 bytes become 1.
  int64_t n = static_cast<int64_t>(piece.size());
  for (size_t pos = piece.find(kSpaceMark); pos != std::string::npos;
       pos = piece.find(kSpaceMark, pos + kSpaceMark.size())) {
    n -= 2;
  }
  return n;
}

// Index of the UTF-8 character boundary at or before `pos`.
size_t utf8_boundary_before(std::string_view s, size_t pos) {
  while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

uint64_t fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "cannot open tokenizer model {} (data.tokenizer)", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return from_serialized(ss.str(), path);
}

Tokenizer Tokenizer::from_serialized(std::string serialized_model, const std::string& origin) {
  Tokenizer t;
  t.sp_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
  const auto status = t.sp_->LoadFromSerializedProto(serialized_model);
  MOE_USAGE_CHECK(status.ok(), "{} is not a sentencepiece model: {}", origin, status.ToString());
  t.serialized_ = std::move(serialized_model);
  t.origin_ = origin;
  t.fingerprint_ = fnv1a64(t.serialized_);
  t.eos_id_ = t.sp_->eos_id();
  MOE_USAGE_CHECK(t.eos_id_ >= 0, "tokenizer {} has no eos token; moe-spec separates documents "
                  "with eos (train the model with eos_id=2)", origin);
  const int n = t.sp_->GetPieceSize();
  t.token_bytes_.resize(static_cast<size_t>(n));
  for (int id = 0; id < n; ++id) {
    int64_t bytes = 0;
    if (t.sp_->IsByte(id)) {
      bytes = 1;
      t.has_byte_fallback_ = true;
    } else if (!t.sp_->IsControl(id) && !t.sp_->IsUnknown(id)) {
      const std::string& p = t.sp_->IdToPiece(id);
      bytes = bytes_of_piece(p);
      if (p.find('\n') != std::string::npos) t.newline_is_boundary_ = false;
      if (p.find(kSpaceMark, 1) != std::string::npos) t.space_is_boundary_ = false;
    }
    t.token_bytes_[static_cast<size_t>(id)] = bytes;
  }
  if (!t.has_byte_fallback_) {
    spdlog::warn("tokenizer {} has no byte fallback: characters outside its vocabulary become "
                 "unk and decode(encode(x)) != x", origin);
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  MOE_CHECK(status.ok(), "sentencepiece encode failed: {}", status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int id : v) {
    MOE_CHECK(id >= 0 && id < static_cast<int>(token_bytes_.size()),
              "token id {} outside the vocabulary [0, {})", id, token_bytes_.size());
  }
  std::string out;
  const auto status = sp_->Decode(v, &out);
  MOE_CHECK(status.ok(), "sentencepiece decode failed: {}", status.ToString());
  return out;
}

int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::unk_id() const { return sp_->unk_id(); }
const std::string& Tokenizer::piece(int32_t id) const { return sp_->IdToPiece(id); }

std::string Tokenizer::fingerprint_hex() const { return fmt::format("{:016x}", fingerprint_); }

void Tokenizer::save(const std::string& path) const { write_file_atomically(path, serialized_); }

void CachedEncoder::encode_append(std::string_view text, std::vector<int32_t>& out) {
  constexpr size_t kMaxMemoWord = 32;        // longer words are rare: encode them directly
  constexpr size_t kMaxMemoEntries = 1 << 20;
  if (!tok_.space_is_boundary()) {
    const auto ids = tok_.encode(text);
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find(' ', begin + 1);  // a word is a space (if any) and what follows it
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(begin, end - begin);
    begin = end;
    if (word.size() > kMaxMemoWord) {
      const auto ids = tok_.encode(word);
      out.insert(out.end(), ids.begin(), ids.end());
      continue;
    }
    auto it = memo_.find(std::string(word));
    if (it == memo_.end()) {
      if (memo_.size() >= kMaxMemoEntries) memo_.clear();
      it = memo_.emplace(std::string(word), tok_.encode(word)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

std::vector<std::string_view> split_training_sentences(std::string_view text, size_t max_bytes) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    while (line.size() > max_bytes) {
      size_t cut = line.rfind(' ', max_bytes);
      if (cut == std::string_view::npos || cut == 0) cut = utf8_boundary_before(line, max_bytes);
      if (cut == 0) cut = max_bytes;  // cannot happen for valid UTF-8 and max_bytes >= 4
      out.push_back(line.substr(0, cut));
      line.remove_prefix(cut);
    }
    if (!line.empty()) out.push_back(line);
    start = end + 1;
  }
  return out;
}

TrainingSample::TrainingSample(int64_t budget_bytes, int64_t total_bytes)
    : keep_ratio_(total_bytes <= 0 ? 1.0
                                   : std::min(1.0, static_cast<double>(budget_bytes) /
                                                       static_cast<double>(total_bytes))) {}

void TrainingSample::add_document(std::string_view text) {
  for (std::string_view s : split_training_sentences(text, kMaxTrainingSentenceBytes)) offer(s);
}

void TrainingSample::offer(std::string_view sentence) {
  // Error diffusion: each sentence adds ratio * its bytes of credit; it is kept when the credit
  // covers it. Over any long stretch the kept fraction of bytes is the ratio.
  const double len = static_cast<double>(sentence.size());
  credit_ += keep_ratio_ * len;
  if (credit_ + 1e-9 >= len) {
    credit_ -= len;
    sentences_.emplace_back(sentence);
    kept_bytes_ += static_cast<int64_t>(sentence.size());
  }
}

Tokenizer train_tokenizer(const std::vector<std::string>& sentences, int64_t vocab_size) {
  MOE_USAGE_CHECK(!sentences.empty(), "no text to train the tokenizer on");
  MOE_USAGE_CHECK(vocab_size >= 260 && vocab_size <= (int64_t{1} << 31) - 1,
                  "data.tokenizer_vocab_size must be at least 260 (3 special tokens + 256 byte "
                  "fallback tokens + 1), found {}", vocab_size);
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"max_sentence_length", std::to_string(kMaxTrainingSentenceBytes + 96)},
      {"input_sentence_size", "0"},
      {"num_threads", "1"},  // see tokenizer.h: keeps the model bytes machine-independent
      {"minloglevel", "2"},  // sentencepiece's own INFO/WARNING chatter off; we log a summary
  };
  VectorSentenceIterator it(sentences);
  std::string serialized;
  const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &it, &serialized);
  MOE_USAGE_CHECK(status.ok(),
                  "training the tokenizer (vocab {}, data.tokenizer_vocab_size) failed: {}",
                  vocab_size, status.ToString());
  return Tokenizer::from_serialized(std::move(serialized), "(trained)");
}

}  // namespace moe::data
