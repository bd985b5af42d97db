// libFuzzer target: the YAML config reader and `--set KEY=VALUE` overrides (lib/config).
// Checks beyond "accept or moe::Error": a config that was accepted is written back with
// config_to_yaml, and that text must read back to the same config (what we write, we can read).
#include <sstream>

#include "config/config.h"
#include "fuzz_util.h"

namespace {

void check_round_trip(const moe::Config& cfg) {
  const std::string yaml = moe::config_to_yaml(cfg);
  moe::Config back;
  try {
    back = moe::config_from_yaml_string(yaml, "config_to_yaml output");
  } catch (const moe::Error& e) {
    moe::fuzz::finding(std::string("an accepted config does not read back: ") + e.what() +
                       "\n--- written:\n" + yaml);
  }
  if (moe::config_to_yaml(back) != yaml) {
    moe::fuzz::finding("an accepted config reads back different:\n" + yaml + "\n--- read back:\n" +
                       moe::config_to_yaml(back));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The whole input as a config file.
  moe::fuzz::expect_accept_or_error([&] {
    moe::Config cfg = moe::config_from_yaml_string(text, "fuzz.yaml");
    check_round_trip(cfg);
  });
  // Each line as one --set override of the defaults, applied in order, then validated.
  moe::fuzz::expect_accept_or_error([&] {
    std::istringstream lines(text);
    std::string line;
    std::vector<std::string> overrides;
    while (std::getline(lines, line)) overrides.push_back(line);
    moe::Config cfg = moe::config_from_yaml_string("", "defaults", overrides);
    check_round_trip(cfg);
  });
  return 0;
}
