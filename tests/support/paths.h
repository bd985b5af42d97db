// Where tests find the project, the build and ../shared (the corpora and zero-shot files).
#pragma once
#include <string>

namespace moe::test {
std::string source_dir();  // the project checkout
std::string binary_dir();  // the CMake build folder
// ../shared beside the checkout, or $MOE_SHARED_DIR. Empty when neither exists.
std::string shared_dir();
// A fresh empty folder under the build's tmp/, unique per call.
std::string make_temp_dir(const std::string& tag);
}  // namespace moe::test
