#include "support/paths.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moe::test {

std::string source_dir() { return MOE_SOURCE_DIR; }
std::string binary_dir() { return MOE_BINARY_DIR; }

std::string shared_dir() {
  if (const char* env = std::getenv("MOE_SHARED_DIR")) {
    if (fs::is_directory(env)) return env;
  }
  fs::path p = fs::path(MOE_SOURCE_DIR).parent_path() / "shared";
  if (fs::is_directory(p)) return p.string();
  return "";
}

std::string make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  fs::path p = fs::path(MOE_BINARY_DIR) / "tmp" /
               (tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

}  // namespace moe::test
