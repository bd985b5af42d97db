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

std::string clip_text(const std::string& s, size_t max) {
  if (s.size() <= max || max < 40) return s;
  const size_t head = max * 3 / 4, tail = max - head;
  size_t h = head, t = s.size() - tail;
  // Cut on UTF-8 character boundaries.
  while (h > 0 && (static_cast<unsigned char>(s[h]) & 0xC0) == 0x80) --h;
  while (t < s.size() && (static_cast<unsigned char>(s[t]) & 0xC0) == 0x80) ++t;
  return s.substr(0, h) + " [... " + std::to_string(t - h) + " bytes ...] " + s.substr(t);
}

Error::Error(ErrorKind kind, const char* file, int line, const std::string& msg)
    : std::runtime_error(clip_text(msg, 2000)), kind_(kind), where_(short_path(file) + ":" + std::to_string(line)) {}

void raise(const char* file, int line, const std::string& msg) {
  throw Error(ErrorKind::kRuntime, file, line, msg);
}

void raise_usage(const char* file, int line, const std::string& msg) {
  throw Error(ErrorKind::kUsage, file, line, msg);
}

}  // namespace moe
