// The steps of moetrain around the training loop: finding and checking the checkpoint to
// resume, refusing to start a fresh run over an existing one, the --dry-run report, the MFU
// peak, and the log files of the run directory.
#pragma once
#include <string>

#include "config/config.h"

namespace moe {

// --resume DIR -> the checkpoint to continue from: the newest complete checkpoint of a run
// directory, or the checkpoint directory given. It is verified (manifest sizes and hashes), and
// it must be the newest checkpoint of its run (continuing an older one would collide with the
// newer ones' step numbers).
std::string find_resume_checkpoint(const std::string& resume_dir);

// Usage error when out_dir already holds a run (checkpoints or metrics.jsonl): never train over
// an existing run; --resume continues it.
void check_fresh_run_dir(const std::string& out_dir);

// Peak FLOP/s used for the MFU estimate: --peak-tflops when given (> 0); otherwise 100 GFLOP/s
// per CPU thread (OpenBLAS sgemm measured ~200 GFLOP/s on 2 cores of the development machine),
// or an H100's dense tensor-core peak on CUDA (989 TFLOP/s bf16, 495 TFLOP/s tf32 for fp32).
double peak_flops(const TrainConfig& train, double peak_tflops_flag);

// Parameter counts, FLOPs per token and step, and the memory estimate of one training process.
// vocab_size 0: the tokenizer is not trained yet; data.tokenizer_vocab_size is assumed.
std::string dry_run_report(const Config& cfg, double peak);

// The data a run would read, checked without reading it: every data.train / data.valid spec
// expands to at least one file (lib/data/corpus.h rules) and data.tokenizer, when set, is a file.
// Returns one report line ("data: train N files (X MB), valid ..."); a missing path is a usage
// error naming the key and the path. --dry-run runs it so that a config can be checked whole.
std::string check_data_paths(const Config& cfg);

// Console logging to stderr (stdout stays for --dump-config and --dry-run output), with a
// memory of the lines logged so far so that attach_run_log() can copy them into train.log.
void setup_console_logging(const std::string& level);
// Appends the remembered lines to <out_dir>/train.log, then logs every later line there too.
void attach_run_log(const std::string& out_dir);

}  // namespace moe
