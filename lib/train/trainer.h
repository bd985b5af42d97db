// The training loop of moetrain: micro-batches with gradient accumulation, global-norm
// clipping, AdamW under the learning-rate schedule, bias balancing, periodic validation
// (loss, perplexity, bits per byte), a log line and a metrics.jsonl record every
// run.log_every steps (losses, lr, grad norm, tokens/s, MFU, ETA, per-layer routing statistics),
// and atomic checkpoints from which a run resumes bit-identically.
#pragma once
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "config/config.h"
#include "model/model.h"
#include "train/data_source.h"
#include "model/hf_import.h"
#include "train/grad_sync.h"
#include "train/metrics_file.h"
#include "train/optimizer.h"

namespace moe {

struct TrainerOptions {
  std::string resume_checkpoint;  // a verified checkpoint directory, or "" for a fresh run
  int64_t stop_at_step = 0;       // > 0: save a checkpoint and stop after this step (as if
                                  // interrupted; the schedule still spans train.max_steps)
  double peak_flops = 0;          // one rank's peak FLOP/s for the MFU estimate (0: no MFU)
  // The ranks of a multi-process run (data parallel, docs/distributed.md); nullptr: one rank.
  // Only rank 0 writes metrics and checkpoints.
  Communicator* comm = nullptr;
  const HfImport* init_from = nullptr;  // fresh run: start from these weights (--init-from)
};

enum class TrainOutcome { kFinished, kStopped, kInterrupted };

class Trainer {
 public:
  // cfg must be resolved (model.vocab_size set). The run directory is cfg.run.out_dir.
  Trainer(const Config& cfg, Backend& backend, TrainingData& data, const TrainerOptions& opts);
  ~Trainer();

  // Trains until train.max_steps (or stop_at_step). When a stop signal has been received
  // (core/stop_signals.h; only moetrain's main sets that up) it saves a checkpoint at the next
  // step boundary and returns kInterrupted.
  TrainOutcome run();

  MoeModel& model() { return *model_; }
  AdamW& optimizer() { return *optimizer_; }
  int64_t step() const { return step_; }
  // Writes a checkpoint of the current state (and prunes old ones); returns its directory. A
  // failure is a runtime error naming the newest complete checkpoint. With several ranks every
  // rank calls it; rank 0 writes (others return "").
  std::string save();

  struct StepResult {
    LossValues loss;  // means over the micro-batches
    double grad_norm = 0;
    double lr = 0;
  };
  // One optimizer update (exposed for tests).
  StepResult train_step();
  struct ValidResult {
    double loss = 0, ppl = 0, bpb = 0;
    int64_t tokens = 0, bytes = 0;
  };
  ValidResult validate();
  // Seconds this process spent waiting for gradient all-reduces the backward did not hide.
  double comm_wait_seconds() const { return grad_sync_ ? grad_sync_->wait_seconds() : 0; }

 private:
  void log_step(const StepResult& r, double step_seconds, int64_t steps_in_window);
  void log_valid(const ValidResult& v);
  void open_metrics(bool resuming);
  void write_metrics(const nlohmann::json& record);
  // After a failed write to metrics.jsonl or train.log: a last checkpoint attempt, then a
  // runtime error that says what failed, what was saved and how to continue.
  [[noreturn]] void stop_after_write_failure();
  void check_ranks_agree();
  // Whether a stop signal reached any rank (a collective: every rank calls it at the same point).
  bool any_rank_signalled();
  void reduce_losses(LossValues& loss);

  Config cfg_;
  Backend& backend_;
  TrainingData& data_;
  TrainerOptions opts_;
  std::unique_ptr<Communicator> own_comm_;  // the 1-rank communicator when opts.comm is null
  Communicator* comm_ = nullptr;
  int rank_ = 0, world_ = 1;
  // Expert parallelism (train.expert_parallel > 1): the expert-parallel group of this rank
  // (consecutive ranks) and the ranks that hold the same expert shard (its data-parallel peers).
  std::unique_ptr<Communicator> expert_comm_, expert_replicas_;
  std::unique_ptr<MoeModel> model_;
  std::unique_ptr<GradSync> grad_sync_;
  Batch skipped_;  // the other ranks' micro-batches, read past
  std::unique_ptr<AdamW> optimizer_;
  MetricsFile metrics_;
  Batch batch_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  double last_lr_ = 0;
  double flops_per_token_ = 0;
  double train_seconds_ = 0;   // time spent in train_step in this process
  int64_t steps_this_process_ = 0;
  double logged_comm_wait_ = 0;  // comm_wait_seconds() at the last metrics record
  double logged_a2a_ = 0;        // the model's expert_comm_seconds() at the last record
};

}  // namespace moe
