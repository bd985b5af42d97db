#include "core/error.h"

#include <cstring>

namespace moe {

static std::string short_path(const char* file) {
  // Keep the path from the project's top-level folder on, so messages do not leak build paths.
  static const char* kRoots[] = {"lib/", "kernels/", "apps/", "tests/"};
  for (const char* root : kRoots) {
    const char* p = std::strstr(file, root);
    if (p) return p;
  }
  return file;
}

Error::Error(ErrorKind kind, const char* file, int line, const std::string& msg)
    : std::runtime_error(msg), kind_(kind), where_(short_path(file) + ":" + std::to_string(line)) {}

void raise(const char* file, int line, const std::string& msg) {
  throw Error(ErrorKind::kRuntime, file, line, msg);
}

void raise_usage(const char* file, int line, const std::string& msg) {
  throw Error(ErrorKind::kUsage, file, line, msg);
}

}  // namespace moe
