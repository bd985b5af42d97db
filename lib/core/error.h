// The one error type of moe-spec. Every failure carries the source file and line that raised it,
// and a message that says what was expected against what was found. Each app's main() catches
// moe::Error and maps it to an exit code: 2 for a usage or config error, 1 for everything else.
#pragma once
#include <stdexcept>
#include <string>

#include <spdlog/fmt/fmt.h>

namespace moe {

enum class ErrorKind { kRuntime, kUsage };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const char* file, int line, const std::string& msg);
  ErrorKind kind() const { return kind_; }
  const std::string& where() const { return where_; }  // "lib/x.cpp:42"
  int exit_code() const { return kind_ == ErrorKind::kUsage ? 2 : 1; }

 private:
  ErrorKind kind_;
  std::string where_;
};

// s, or when longer than max bytes its head and tail around "[... N bytes ...]": for quoting
// input (a malformed 10 MB JSONL line) in a message. Error clips every message to 2000 bytes.
std::string clip_text(const std::string& s, size_t max = 200);

[[noreturn]] void raise(const char* file, int line, const std::string& msg);
[[noreturn]] void raise_usage(const char* file, int line, const std::string& msg);

}  // namespace moe

// A message is mandatory: every check states what was expected.
#define MOE_CHECK(cond, ...)                                                                   \
  do {                                                                                         \
    if (!(cond)) ::moe::raise(__FILE__, __LINE__, fmt::format(__VA_ARGS__));                  \
  } while (0)
#define MOE_FAIL(...) ::moe::raise(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
// A user error (bad config, bad command line, bad input file): exit code 2.
#define MOE_USAGE_CHECK(cond, ...)                                                             \
  do {                                                                                         \
    if (!(cond)) ::moe::raise_usage(__FILE__, __LINE__, fmt::format(__VA_ARGS__));            \
  } while (0)
#define MOE_USAGE_FAIL(...) ::moe::raise_usage(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
