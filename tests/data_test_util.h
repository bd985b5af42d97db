// Helpers shared by the data-pipeline tests (test_data_*.cpp): writing small corpora and
// training one small tokenizer per test binary.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "support/paths.h"

namespace moe::test {

inline void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The Tiny Shakespeare corpus in data/ (empty string when it is missing).
inline std::string shakespeare_path() {
  const std::string p = data_dir() + "/corpora/tinyshakespeare/input.txt";
  return std::filesystem::exists(p) ? p : "";
}

// About `bytes` of real English text: Tiny Shakespeare, or the fortunes package's cookie file
// when data/ is absent (both are present on the development machine).
inline std::string english_sample(size_t bytes) {
  std::string path = shakespeare_path();
  if (path.empty()) path = "/usr/share/games/fortunes/cookie";
  std::string text = read_text(path);
  EXPECT_FALSE(text.empty()) << "no sample corpus found (data/corpora/tinyshakespeare/input.txt is missing)";
  if (text.size() > bytes) text.resize(bytes);
  return text;
}

// One 512-token tokenizer trained on 200 KB of English, shared by a test binary.
inline const data::Tokenizer& small_tokenizer() {
  static const std::unique_ptr<data::Tokenizer> tok = [] {
    data::TrainingSample sample(200'000, 200'000);
    sample.add_document(english_sample(200'000));
    return std::make_unique<data::Tokenizer>(data::train_tokenizer(sample.sentences(), 512));
  }();
  return *tok;
}

}  // namespace moe::test
