// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp; see tools/fuzz.sh and
// docs/reliability.md, "Inputs, sanitizers and fuzzing").
//
// The contract each target checks: a parser of outside input either accepts the input or raises
// moe::Error. Any other exception escaping, a crash, a sanitizer report, a hang or a huge
// allocation is a finding. The parsers read files, so the input is written to a file in a
// per-process scratch directory first: the targets exercise the same entry points as the apps.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace moe::fuzz {

// A scratch directory for this process, created once (removed by tools/fuzz.sh's trap).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    spdlog::set_level(spdlog::level::off);  // parsers may warn; the fuzzer's output stays clean
    const char* base = std::getenv("MOE_FUZZ_TMP");
    std::filesystem::path d = std::filesystem::path(base ? base : "/tmp") /
                              ("moe-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", p.c_str());
    std::abort();
  }
  return p.string();
}

// Runs fn; moe::Error is the documented way to refuse an input. Anything else propagates to
// libFuzzer, which reports it with the input that caused it.
template <typename Fn>
void expect_accept_or_error(Fn&& fn) {
  try {
    fn();
  } catch (const moe::Error&) {
  }
}

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what.c_str());
  std::abort();
}

}  // namespace moe::fuzz
