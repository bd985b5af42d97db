// moetrain: pretrains a sparse MoE transformer (docs/model.md §1-§2) on text corpora.
//
//   moetrain --config configs/quickstart.yaml [--set key.path=value ...] [--losses lb,sp,cp]
//   moetrain --resume runs/quickstart            (continues the run bit-identically)
//   moetrain --config run.yaml --init-from HF_DIR (starts from a transformers checkpoint)
//
// Order: parse the command line -> resolve the config (file < --set < --losses) -> checks of the
// run directory -> data (tokenizer, shards) -> backend, model, optimizer -> config.yaml and
// train.log in the run directory -> train. Nothing is written into the run directory before
// the inputs have been checked, so a bad input leaves an existing run untouched.
// Exit codes: 0 done, 1 runtime error, 2 usage error (bad flag, config or input), 130 stopped by
// a signal (after saving a checkpoint).
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/omp_wait_policy.h"
#include "checkpoint/checkpoint.h"
#include "model/hf_import.h"
#include "train/corpus_data.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace {

struct TrainFlags {
  int64_t stop_at_step = 0;
  double peak_tflops = 0;
};

int train(const moe::CliOptions& opts, const TrainFlags& flags) {
  std::string checkpoint;
  if (!opts.resume.empty()) checkpoint = moe::find_resume_checkpoint(opts.resume);
  moe::Config cfg = moe::resolve_config(
      opts, checkpoint.empty() ? "" : (fs::path(checkpoint) / "config.yaml").string());
  if (!checkpoint.empty()) {
    // The run continues where its checkpoints are, whatever run.out_dir said (a relative path
    // in the saved config may point elsewhere from another working directory).
    cfg.run.out_dir = moe::run_dir_of_checkpoint(checkpoint);
  }
  std::unique_ptr<moe::HfImport> hf;
  if (!opts.init_from.empty()) {
    MOE_USAGE_CHECK(checkpoint.empty(), "--init-from starts a fresh run; --resume continues one: "
                    "give one of them");
    hf = std::make_unique<moe::HfImport>(moe::read_hf_checkpoint(opts.init_from));
    moe::apply_hf_config(*hf, cfg.model);
    if (cfg.data.tokenizer.empty()) {
      MOE_USAGE_CHECK(!hf->tokenizer_model.empty(), "--init-from {}: no tokenizer.model "
                      "(sentencepiece) there: give the tokenizer whose ids the model was trained "
                      "on with --set data.tokenizer=PATH", opts.init_from);
      cfg.data.tokenizer = hf->tokenizer_model;
    }
    moe::validate(cfg);
  }
  if (opts.dump_config) {
    fmt::print("{}", moe::config_to_yaml(cfg));
    return 0;
  }
  const double peak = moe::peak_flops(cfg.train, flags.peak_tflops);
  if (opts.dry_run) {
    fmt::print("{}", moe::dry_run_report(cfg, peak));
    fmt::print("{}", moe::check_data_paths(cfg));
    return 0;
  }
  if (checkpoint.empty()) moe::check_fresh_run_dir(cfg.run.out_dir);
  MOE_USAGE_CHECK(!cfg.data.train.empty(), "data.train: expected at least one corpus path "
                  "(a file, directory, glob or .jsonl file), found none");
  if (opts.debug_sync) setenv("MOE_DEBUG_SYNC", "1", 1);  // read by the CUDA backend

  auto data = moe::open_corpus_data(
      cfg, checkpoint.empty() ? "" : (fs::path(checkpoint) / "tokenizer.model").string());
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = data->vocab_size();
  MOE_USAGE_CHECK(cfg.model.vocab_size >= data->vocab_size(), "model.vocab_size: expected at "
                  "least the tokenizer's {} tokens, found {}", data->vocab_size(),
                  cfg.model.vocab_size);
  auto backend = moe::make_backend(cfg.train.device, static_cast<int>(cfg.train.threads));

  moe::TrainerOptions topts;
  topts.resume_checkpoint = checkpoint;
  topts.stop_at_step = flags.stop_at_step;
  topts.peak_flops = peak;
  topts.init_from = hf.get();
  moe::Trainer trainer(cfg, *backend, *data, topts);

  moe::attach_run_log(cfg.run.out_dir);
  moe::write_file_atomic((fs::path(cfg.run.out_dir) / "config.yaml").string(),
                         moe::config_to_yaml(cfg));
  spdlog::info("run directory {} (backend {})", cfg.run.out_dir, backend->name());
  switch (trainer.run()) {
    case moe::TrainOutcome::kInterrupted: return 130;
    case moe::TrainOutcome::kStopped:
      spdlog::info("stopped at step {} (--stop-at-step); continue with --resume {}",
                   trainer.step(), cfg.run.out_dir);
      return 0;
    case moe::TrainOutcome::kFinished:
      spdlog::info("done: {} steps; checkpoints in {}", trainer.step(),
                   moe::checkpoints_root(cfg.run.out_dir));
      return 0;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::prefer_passive_omp_wait(argv);  // before any OpenMP region: see omp_wait_policy.h
  CLI::App app{"moetrain: pretrain a sparse Mixture-of-Experts transformer with the lb, z, sp "
               "and cp losses"};
  moe::CliOptions opts;
  TrainFlags flags;
  moe::add_config_options(app, opts);
  moe::add_run_options(app, opts);
  app.add_option("--stop-at-step", flags.stop_at_step,
                 "save a checkpoint and stop after this step, as if interrupted (the schedule "
                 "still spans train.max_steps)")
      ->check(CLI::PositiveNumber);
  app.add_option("--peak-tflops", flags.peak_tflops,
                 "device peak TFLOP/s for the MFU estimate (default: 0.1 per CPU thread; "
                 "H100 989 bf16 / 495 tf32)")
      ->check(CLI::PositiveNumber);
  const int parsed = moe::parse_command_line(app, argc, argv);
  if (parsed >= 0) return parsed;
  moe::setup_console_logging(opts.log_level);
  try {
    return train(opts, flags);
  } catch (const moe::Error& e) {
    spdlog::error("error: {} ({})", e.what(), e.where());
    return e.exit_code();
  } catch (const std::exception& e) {
    spdlog::error("error: {}", e.what());
    return 1;
  }
}
