// The command-line options every moe-spec program shares (CLI11): the config file, `--set`
// overrides, the `--losses` shorthand, `--dump-config`, `--dry-run`, `--resume`, `--log-level`
// and `--debug-sync`. Each app adds the groups it needs, then resolves the effective Config with
// the priority default < config file < --set (in order) < --losses.
#pragma once
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "config/config.h"

namespace moe {

struct CliOptions {
  std::string config_path;             // --config FILE
  std::vector<std::string> overrides;  // --set a.b=value (repeatable, applied in order)
  std::string losses;                  // --losses lb,sp,cp ("none": no auxiliary loss)
  bool losses_given = false;
  bool dump_config = false;            // print the resolved YAML and exit 0
  bool dry_run = false;                // report sizes and cost, train nothing
  std::string resume;                  // --resume DIR: a run directory or one checkpoint
  std::string init_from;               // --init-from HF_DIR: start from a transformers checkpoint
  std::string log_level = "info";
  bool debug_sync = false;             // synchronise the device after every op
};

// --config, --set, --losses, --dump-config.
void add_config_options(CLI::App& app, CliOptions& opts);
// --dry-run, --resume, --log-level, --debug-sync.
void add_run_options(CLI::App& app, CliOptions& opts);

// Parses argv. Returns -1 when the program should go on; otherwise the exit code to return now
// (0 after --help, 2 after a parse error such as an unknown flag, with CLI11's message printed).
int parse_command_line(CLI::App& app, int argc, char** argv);

// The overrides in the order they apply: every --set, then --losses as loss.losses=...
std::vector<std::string> effective_overrides(const CliOptions& opts);

// Loads --config (or, when it was not given, fallback_config: the config.yaml found by --resume)
// and applies the overrides. A usage error when neither file is known.
Config resolve_config(const CliOptions& opts, const std::string& fallback_config = "");

// Sets spdlog's default level from a name: trace, debug, info, warn, error, off.
void set_log_level(const std::string& level);

}  // namespace moe
