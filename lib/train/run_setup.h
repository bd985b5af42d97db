// The steps of moetrain around the training loop: finding and checking the checkpoint to
// resume, refusing to start a fresh run over an existing one, the --dry-run report, the MFU
// peak, and the log files of the run directory.
#pragma once
#include <string>
#include <vector>

#include "config/config.h"

namespace moe {

// --resume DIR -> the checkpoint to continue from: the newest complete checkpoint of a run
// directory, or the checkpoint directory given. It is verified (manifest sizes and hashes), and
// it must be the newest checkpoint of its run (continuing an older one would collide with the
// newer ones' step numbers).
std::string find_resume_checkpoint(const std::string& resume_dir);

// Usage error when out_dir already holds a run with a checkpoint: never train over an existing
// run; --resume continues it. Returns true when out_dir holds a run that stopped before its first
// checkpoint (is_run_without_checkpoint): a fresh start replaces it (discard_partial_run).
bool check_fresh_run_dir(const std::string& out_dir);

// True when dir holds the files of a run (config.yaml, metrics.jsonl, train.log or an empty
// checkpoints/) but no complete checkpoint: the run was stopped before its first one. Such a run
// restarts from step 0, by a fresh start or by --resume (which then uses its config.yaml).
bool is_run_without_checkpoint(const std::string& dir);

// Takes an exclusive lock (flock) on the run directory, creating it, for the rest of the process:
// usage error when another process holds it (two moetrain processes never share a run directory).
// The kernel drops the lock when the process ends, however it ends.
void lock_run_dir(const std::string& out_dir);
// --resume reads the run's checkpoints before the lock is taken: a run that another moetrain is
// still writing is refused first, with lock_run_dir's error, instead of racing its checkpoints.
void check_run_dir_not_in_use(const std::string& dir);

// Removes what a crashed process left behind in a locked run directory: temporary checkpoint
// directories (checkpoints/step_XXXXXXXX.tmp-PID) and temporary files (*.tmp-PID) of processes
// that are no longer alive, or of this very PID (a reused PID). A live PID's are kept.
void remove_stale_temporaries(const std::string& out_dir);

// Deletes metrics.jsonl and train.log of a run stopped before its first checkpoint, saying so.
void discard_partial_run(const std::string& out_dir);

// Peak FLOP/s used for the MFU estimate: --peak-tflops when given (> 0); otherwise, on CPU, the
// theoretical f32 peak of this CPU for the run's threads (core/cpu_peak.h), or on CUDA an
// H100/H200's dense tensor-core peak (989 TFLOP/s bf16, 495 TFLOP/s tf32 for fp32).
struct PeakFlops {
  double flops = 0;
  std::string basis;  // where the figure comes from, logged at the start of a run
};
PeakFlops peak_flops(const TrainConfig& train, double peak_tflops_flag);

// Parameter counts, FLOPs per token and step, and the memory estimate of one training process.
// vocab_size 0: the tokenizer is not trained yet; data.tokenizer_vocab_size is assumed.
// The multi-process layout the report plans for: ranks (mpirun -np) and the link bandwidths
// (GB/s, one line each) at which it prints the time the per-step communication takes.
struct DryRunLayout {
  int ranks = 1;
  std::vector<double> link_gb_per_s;
};
// With a layout: memory per rank with and without ZeRO-1, and the bytes of the gradient
// all-reduce (or ZeRO-1's reduce-scatter + all-gather) per step.
std::string dry_run_report(const Config& cfg, double peak, const DryRunLayout& layout = {});

// The data a run would read, checked without reading it: every data.train / data.valid spec
// expands to at least one file (lib/data/corpus.h rules) and data.tokenizer, when set, is a file.
// Returns one report line ("data: train N files (X MB), valid ..."); a missing path is a usage
// error naming the key and the path. --dry-run runs it so that a config can be checked whole.
std::string check_data_paths(const Config& cfg);

// Console logging to stderr (stdout stays for --dump-config and --dry-run output), with a
// memory of the lines logged so far so that attach_run_log() can copy them into train.log.
void setup_console_logging(const std::string& level);
// Appends the remembered lines to <out_dir>/train.log, then logs every later line there too,
// flushing each one so that a failed write (a full disk) is seen at once.
void attach_run_log(const std::string& out_dir);
// The first failed write to train.log ("" when none): the trainer stops on it.
std::string run_log_write_error();

}  // namespace moe
