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
// SIGINT, SIGTERM or SIGHUP (after saving a checkpoint at the next step boundary; a second
// signal stops at once without saving). See docs/reliability.md.
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "comm/process.h"
#include "config/cli.h"
#include "core/error.h"
#include "core/stop_signals.h"
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
  int ranks = 0;                         // --ranks: the layout --dry-run plans for
  std::vector<double> link_gb_per_s = {3, 50, 450};  // --link-gbs
};

int train(const moe::CliOptions& opts, const TrainFlags& flags) {
  const moe::ProcessInfo& proc = moe::process_info();
  std::string checkpoint;
  std::string base_config;  // the config a --resume starts from
  if (!opts.resume.empty()) {
    moe::check_run_dir_not_in_use(opts.resume);
    const fs::path resume_path(opts.resume);
    if (resume_path.parent_path().filename() == "checkpoints")  // a checkpoint of the run
      moe::check_run_dir_not_in_use(resume_path.parent_path().parent_path().string());
    if (moe::is_run_without_checkpoint(opts.resume)) {
      // Stopped before its first checkpoint: start it again from step 0 with its config.yaml.
      base_config = (fs::path(opts.resume) / "config.yaml").string();
      MOE_USAGE_CHECK(!opts.config_path.empty() || fs::exists(base_config),
                      "--resume {}: the run stopped before its first checkpoint and before "
                      "writing config.yaml, so there is nothing to resume; start it afresh with "
                      "moetrain --config YOUR.yaml --set run.out_dir={} (this replaces its "
                      "partial metrics.jsonl and train.log)", opts.resume, opts.resume);
    } else {
      checkpoint = moe::find_resume_checkpoint(opts.resume);
      base_config = (fs::path(checkpoint) / "config.yaml").string();
    }
  }
  moe::Config cfg = moe::resolve_config(opts, base_config);
  if (!checkpoint.empty()) {
    // The run continues where its checkpoints are, whatever run.out_dir said (a relative path
    // in the saved config may point elsewhere from another working directory).
    cfg.run.out_dir = moe::run_dir_of_checkpoint(checkpoint);
  } else if (!opts.resume.empty()) {
    cfg.run.out_dir = opts.resume;
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
    if (proc.rank == 0) fmt::print("{}", moe::config_to_yaml(cfg));
    return 0;
  }
  const moe::PeakFlops peak = moe::peak_flops(cfg.train, flags.peak_tflops);
  if (opts.dry_run) {
    moe::DryRunLayout layout;
    layout.ranks = flags.ranks > 0 ? flags.ranks : proc.size;
    layout.link_gb_per_s = flags.link_gb_per_s;
    if (proc.rank == 0) {
      fmt::print("{}", moe::dry_run_report(cfg, peak.flops, layout));
      fmt::print("{}", moe::check_data_paths(cfg));
    }
    return 0;
  }
  const bool partial_run = checkpoint.empty() && moe::check_fresh_run_dir(cfg.run.out_dir);
  MOE_USAGE_CHECK(!cfg.data.train.empty(), "data.train: expected at least one corpus path "
                  "(a file, directory, glob or .jsonl file), found none");
  if (opts.debug_sync) setenv("MOE_DEBUG_SYNC", "1", 1);  // read by the CUDA backend

  // A CUDA rank uses the GPU of its local rank (docs/distributed.md).
  std::string device = cfg.train.device;
  if (device == "cuda" && proc.size > 1) device = fmt::format("cuda:{}", proc.local_rank);
  auto backend = moe::make_backend(device, static_cast<int>(cfg.train.threads));
  backend->set_attention_impl(moe::parse_attention_impl(cfg.train.attention, "train.attention"));
  auto comm = moe::make_world_communicator(*backend);

  // Rank 0 prepares the data (tokenizer, shards) first; the others then find it cached instead
  // of writing the same files at the same time.
  const std::string tokenizer =
      checkpoint.empty() ? "" : (fs::path(checkpoint) / "tokenizer.model").string();
  std::unique_ptr<moe::TrainingData> data;
  if (proc.rank == 0) data = moe::open_corpus_data(cfg, tokenizer);
  comm->barrier();
  if (proc.rank != 0) data = moe::open_corpus_data(cfg, tokenizer);
  if (cfg.model.vocab_size == 0) cfg.model.vocab_size = data->vocab_size();
  MOE_USAGE_CHECK(cfg.model.vocab_size >= data->vocab_size(), "model.vocab_size: expected at "
                  "least the tokenizer's {} tokens, found {}", data->vocab_size(),
                  cfg.model.vocab_size);

  // Inputs checked: from here on the run directory is ours to change. Rank 0 alone writes it,
  // so rank 0 alone holds its lock.
  if (proc.rank == 0) {
    moe::lock_run_dir(cfg.run.out_dir);
    moe::remove_stale_temporaries(cfg.run.out_dir);
    if (partial_run) moe::discard_partial_run(cfg.run.out_dir);
  }

  moe::TrainerOptions topts;
  topts.resume_checkpoint = checkpoint;
  topts.stop_at_step = flags.stop_at_step;
  topts.peak_flops = peak.flops;
  topts.comm = comm.get();
  topts.init_from = hf.get();
  moe::Trainer trainer(cfg, *backend, *data, topts);

  if (proc.rank == 0) {
    moe::attach_run_log(cfg.run.out_dir);
    // A resumed run's config.yaml is rewritten by its first checkpoint (Trainer::save), so a
    // resume that fails before saving leaves the run's config.yaml as it was.
    if (checkpoint.empty()) {
      moe::write_file_atomic((fs::path(cfg.run.out_dir) / "config.yaml").string(),
                             moe::config_to_yaml(cfg));
    }
  }
  spdlog::info("run directory {} (backend {}, {} rank{})", cfg.run.out_dir, backend->name(),
               proc.size, proc.size > 1 ? "s" : "");
  spdlog::info("MFU peak {:.4g} TFLOP/s per rank: {}", peak.flops / 1e12, peak.basis);
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

namespace {

int run_main(int argc, char** argv) {
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
                 "device peak TFLOP/s for the MFU estimate (default: this CPU's f32 FMA peak "
                 "for the run's threads; H100/H200 989 bf16 / 495 tf32)")
      ->check(CLI::PositiveNumber);
  app.add_option("--ranks", flags.ranks,
                 "with --dry-run: plan for this many ranks (default: the ranks launched)")
      ->check(CLI::PositiveNumber);
  app.add_option("--link-gbs", flags.link_gb_per_s,
                 "with --dry-run: link bandwidths in GB/s to time the per-step communication at "
                 "(default 3,50,450: 25 GbE, 400 Gb/s InfiniBand, NVLink 4)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  const int parsed = moe::parse_command_line(app, argc, argv);
  if (parsed >= 0) return parsed;
  moe::setup_console_logging(opts.log_level);
  if (const auto& proc = moe::process_info(); proc.rank != 0) {
    spdlog::set_level(std::max(spdlog::get_level(), spdlog::level::warn));
    spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%^%l%$] %v", proc.rank));
  }
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
}  // namespace

// Under an MPI launcher every rank runs main. Only rank 0 logs below warnings (with a rank tag,
// the others may warn); an error on any rank ends the whole job (MPI_Abort), so no rank waits
// forever for a peer that failed.
int main(int argc, char** argv) {
  // First of all: blocks the stop signals in every thread (re-executing the program, also for
  // the OpenMP wait policy of omp_wait_policy.h), so that no signal handler can ever run on a
  // oneDNN GEMM thread, and takes them in one thread (stop_signals.h). The re-exec happens
  // before MPI_Init, so under mpirun the launcher still sees the same process.
  try {
    moe::take_stop_signals_in_a_thread(argv);
    moe::init_processes(&argc, &argv);
  } catch (const moe::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return e.exit_code();
  }
  const int code = run_main(argc, argv);
  // 130: every rank stopped together on a signal after saving (a collective decision): a normal
  // end. Any other failure may be one rank's alone, so it ends the job.
  if (code != 0 && code != 130 && moe::process_info().size > 1) moe::abort_processes(code);
  moe::finalize_processes();
  return code;
}
