#include "support/paths.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moe::test {

std::string source_dir() { return MOE_SOURCE_DIR; }
std::string binary_dir() { return MOE_BINARY_DIR; }

std::string data_dir() { return (fs::path(MOE_SOURCE_DIR) / "data").string(); }

std::string make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  fs::path p = fs::path(MOE_BINARY_DIR) / "tmp" /
               (tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

}  // namespace moe::test
