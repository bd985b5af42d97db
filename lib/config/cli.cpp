// Shared CLI11 options and the config resolution order (see cli.h).
#include "config/cli.h"

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace moe {

void add_config_options(CLI::App& app, CliOptions& opts) {
  app.add_option("--config,-c", opts.config_path, "YAML config file")->check(CLI::ExistingFile);
  app.add_option("--set", opts.overrides,
                 "override one config value, KEY=VALUE (e.g. train.lr=1e-3); repeatable")
      ->take_all()
      ->allow_extra_args(false);
  app.add_option("--losses", opts.losses,
                 "auxiliary losses, comma-separated from lb,sp,cp,z, or 'none' "
                 "(shorthand for --set loss.losses=...)")
      ->each([&opts](const std::string&) { opts.losses_given = true; });
  app.add_flag("--dump-config", opts.dump_config, "print the resolved config as YAML and exit");
}

void add_run_options(CLI::App& app, CliOptions& opts) {
  app.add_flag("--dry-run", opts.dry_run,
               "print parameter counts, FLOPs per token and memory, then exit without training");
  app.add_option("--resume", opts.resume,
                 "continue the run in DIR (a run directory: its latest complete checkpoint; or "
                 "one checkpoint directory)");
  app.add_option("--init-from", opts.init_from,
                 "start a fresh run from a Hugging Face transformers checkpoint (qwen2_moe, "
                 "mixtral, or a moe-spec export): its config.json replaces the model's "
                 "architecture keys, its tensors the initial weights");
  app.add_option("--log-level", opts.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--debug-sync", opts.debug_sync,
               "synchronise the device after every op, so an error names the op that raised it");
}

int parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help or the error message
    return code == 0 ? 0 : 2;
  }
  return -1;
}

std::vector<std::string> effective_overrides(const CliOptions& opts) {
  std::vector<std::string> out = opts.overrides;
  if (opts.losses_given) {
    std::string list = opts.losses == "none" ? "[]" : opts.losses;
    out.push_back("loss.losses=" + list);
  }
  return out;
}

Config resolve_config(const CliOptions& opts, const std::string& fallback_config) {
  const std::string& path = opts.config_path.empty() ? fallback_config : opts.config_path;
  MOE_USAGE_CHECK(!path.empty(),
                  "no config: pass --config FILE.yaml (or --resume DIR of an existing run)");
  return load_config(path, effective_overrides(opts));
}

void set_log_level(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace moe
