// Where tests find the project, the build and the repository's data/ (corpora, zero-shot files).
#pragma once
#include <string>

namespace moe::test {
std::string source_dir();  // the project checkout
std::string binary_dir();  // the CMake build folder
// The repository's data/ folder (data/corpora, data/zeroshot).
std::string data_dir();
// A fresh empty folder under the build's tmp/, unique per call.
std::string make_temp_dir(const std::string& tag);
}  // namespace moe::test
