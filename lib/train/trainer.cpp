// The training loop (see trainer.h). Order within one step s (1-based, after the update):
// update -> log (s % log_every == 0) -> validate (s % eval_every == 0) -> checkpoint
// (s % save_every == 0, the last step, stop_at_step, or a stop signal). A resumed run starts
// after the checkpoint's step, so every record of metrics.jsonl is written exactly once.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/stop_signals.h"
#include "routing/routing_stats.h"
#include "model/param_count.h"
#include "checkpoint/checkpoint.h"
#include "train/expert_checkpoint.h"
#include "train/run_setup.h"
#include "train/schedule.h"
#include "train/watchdog.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string format_rate(double tok_per_s) {
  if (tok_per_s >= 1e6) return fmt::format("{:.2f}M", tok_per_s / 1e6);
  if (tok_per_s >= 1e3) return fmt::format("{:.1f}k", tok_per_s / 1e3);
  return fmt::format("{:.0f}", tok_per_s);
}

nlohmann::json routing_record(const routing::RoutingSummary& summary) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : summary.layers) {
    double load_max = 0, load_mean = 0;
    for (double f : l.load_fraction) {
      load_max = std::max(load_max, f);
      load_mean += f;
    }
    if (!l.load_fraction.empty()) load_mean /= static_cast<double>(l.load_fraction.size());
    layers.push_back({{"layer", l.layer},
                      {"entropy", l.entropy},
                      {"entropy_norm", l.entropy_normalized},
                      {"topk_mass", l.topk_mass},
                      {"load_max", load_max},
                      {"load_mean", load_mean},
                      {"load_max_over_mean", l.load_max_over_mean},
                      {"load_cv", l.load_cv}});
  }
  return layers;
}

}  // namespace

Trainer::Trainer(const Config& cfg, Backend& backend, TrainingData& data,
                 const TrainerOptions& opts)
    : cfg_(cfg), backend_(backend), data_(data), opts_(opts) {
  MOE_CHECK(cfg_.model.vocab_size > 0, "Trainer: model.vocab_size must be resolved first");
  comm_ = opts_.comm;
  if (comm_ == nullptr) {
    own_comm_ = std::make_unique<SingleRankCommunicator>(backend_);
    comm_ = own_comm_.get();
  }
  rank_ = comm_->rank();
  world_ = comm_->size();
  check_ranks_agree();
  const int64_t ep = cfg_.train.expert_parallel;
  if (ep > 1) {
    MOE_USAGE_CHECK(world_ % ep == 0, "train.expert_parallel: expected a divisor of the number "
                    "of ranks ({}), found {} (resuming on fewer ranks: --set "
                    "train.expert_parallel=...)", world_, ep);
    MOE_USAGE_CHECK(cfg_.model.dense_layers < cfg_.model.n_layers &&
                    cfg_.model.n_experts % ep == 0, "train.expert_parallel: expected a divisor "
                    "of model.n_experts ({}) on a model with MoE layers, found {}",
                    cfg_.model.n_experts, ep);
    MOE_USAGE_CHECK(cfg_.train.zero == 0, "train.zero = 1 together with train.expert_parallel "
                    "= {} is not implemented; use one or the other", ep);
    // Expert groups of consecutive ranks; the ranks at the same position in every group hold
    // the same experts and reduce their gradients together.
    const int p = static_cast<int>(ep);
    expert_comm_ = comm_->split(rank_ / p, rank_);
    expert_replicas_ = comm_->split(rank_ % p, rank_);
  }
  const DType compute = cfg_.train.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  model_ = std::make_unique<MoeModel>(cfg_.model, cfg_.loss, backend_, cfg_.train.batch_size,
                                      cfg_.train.seq_len, compute, cfg_.train.recompute,
                                      expert_comm_.get());
  // ZeRO-1 replaces the gradient all-reduce by the optimizer's reduce-scatter + all-gather.
  const bool zero = cfg_.train.zero == 1 && world_ > 1;
  optimizer_ = std::make_unique<AdamW>(backend_, model_->params(), cfg_.train,
                                       model_->param_groups(), zero ? comm_ : nullptr,
                                       expert_comm_.get());
  flops_per_token_ = flops_per_token(cfg_.model, cfg_.model.vocab_size, cfg_.train.seq_len);
  const auto bucket = static_cast<int64_t>(cfg_.train.grad_bucket_mb * (1 << 20) / 4);
  if (!zero) {
    grad_sync_ = std::make_unique<GradSync>(*comm_, *model_, std::max<int64_t>(1, bucket),
                                            expert_replicas_.get());
  }
  if (opts_.resume_checkpoint.empty()) {
    model_->init_parameters(static_cast<uint64_t>(cfg_.train.seed));
    if (opts_.init_from != nullptr) {
      load_hf_weights(*model_, *opts_.init_from);
      spdlog::info("initialised from {} ({})", opts_.init_from->dir, opts_.init_from->model_type);
    }
  } else {
    TrainerState st = load_trainer_state(opts_.resume_checkpoint);
    load_training_state(opts_.resume_checkpoint, *model_, *optimizer_);
    data_.restore_train_state(st.data_state);
    step_ = st.step;
    MOE_USAGE_CHECK(step_ <= cfg_.train.max_steps, "train.max_steps: expected at least the "
                    "checkpoint's step {} to resume {}, found {}", step_,
                    opts_.resume_checkpoint, cfg_.train.max_steps);
    tokens_seen_ = st.tokens_seen;
    last_lr_ = st.lr;
    spdlog::info("resumed from {} at step {} ({} tokens seen)", opts_.resume_checkpoint, step_,
                 tokens_seen_);
  }
  if (world_ > 1) {
    spdlog::info("data parallel over {} ranks ({}): global batch {} x {} micro-batches x {} "
                 "sequences; {}", world_, comm_->name(), world_, cfg_.train.grad_accum,
                 cfg_.train.batch_size, zero ? fmt::format("ZeRO-1, {} optimizer state "
                 "elements on this rank", optimizer_->state_numel())
                 : fmt::format("{} gradient buckets", grad_sync_->n_buckets()));
    if (expert_comm_) {
      spdlog::info("expert parallel: {} groups of {} ranks, {} routed experts per rank and MoE "
                   "layer, each shard held by {} rank(s)", world_ / expert_comm_->size(),
                   expert_comm_->size(), cfg_.model.n_experts / expert_comm_->size(),
                   expert_replicas_->size());
    }
  }
  if (rank_ == 0) open_metrics(!opts_.resume_checkpoint.empty());
}

// Every rank must train the same model on the same data: before step 1 the ranks compare a hash
// of the resolved config and of the training data. On a mismatch rank 0 reports it (a usage
// error, which ends the job); the other ranks wait to be ended with it, so the message that
// explains the failure is rank 0's.
void Trainer::check_ranks_agree() {
  if (world_ <= 1) return;
  const std::string yaml = config_to_yaml(cfg_);
  const auto cfg_hashes = comm_->all_gather_host(hash_bytes(yaml.data(), yaml.size()));
  const auto data_hashes = comm_->all_gather_host(data_.content_hash());
  std::string problem;
  for (int r = 1; r < world_ && problem.empty(); ++r) {
    if (cfg_hashes[r] != cfg_hashes[0]) {
      problem = fmt::format("rank {} resolved a different config than rank 0 (hash {:016x} vs "
                            "{:016x}): launch every rank with the same --config, --set and "
                            "--losses", r, cfg_hashes[r], cfg_hashes[0]);
    } else if (data_hashes[r] != data_hashes[0]) {
      problem = fmt::format("rank {} reads different training data than rank 0 (tokenizer and "
                            "token shards hash {:016x} vs {:016x}): every rank must see the same "
                            "data.train files and tokenizer", r, data_hashes[r], data_hashes[0]);
    }
  }
  if (problem.empty()) return;
  if (rank_ != 0) comm_->barrier();  // rank 0 never arrives: it fails and ends the job
  MOE_USAGE_FAIL("the {} ranks disagree before step 1: {}", world_, problem);
}

void Trainer::reduce_losses(LossValues& loss) {
  if (world_ <= 1) return;
  std::vector<double> v = {loss.lm, loss.lb, loss.z, loss.sp, loss.cp, loss.total,
                           static_cast<double>(loss.n_tokens)};
  comm_->all_reduce_sum_host(v);
  const double w = static_cast<double>(world_);
  loss.lm = v[0] / w;
  loss.lb = v[1] / w;
  loss.z = v[2] / w;
  loss.sp = v[3] / w;
  loss.cp = v[4] / w;
  loss.total = v[5] / w;
  loss.n_tokens = static_cast<int64_t>(std::llround(v[6]));
}

Trainer::~Trainer() = default;

bool Trainer::any_rank_signalled() {
  std::vector<int64_t> stop = {stop_signal_received() != 0 ? 1 : 0};
  if (world_ > 1) comm_->all_reduce_sum_host(stop);
  return stop[0] != 0;
}

void Trainer::open_metrics(bool resuming) {
  const fs::path path = fs::path(cfg_.run.out_dir) / "metrics.jsonl";
  fs::create_directories(cfg_.run.out_dir);
  if (resuming && fs::exists(path)) {
    // Drop the records past the checkpoint (written after it by the interrupted process): the
    // resumed run writes them again, so each step appears once.
    std::istringstream in(read_file(path.string()));
    std::string line, kept;
    bool dropped = false;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t{0}) > step_) {
          dropped = true;
          continue;
        }
      } catch (const nlohmann::json::exception&) {
        dropped = true;  // a line cut short by a crash
        continue;
      }
      kept += line + "\n";
    }
    if (dropped) write_file_atomic(path.string(), kept);
  }
  metrics_.open(path.string());
}

void Trainer::write_metrics(const nlohmann::json& record) { metrics_.append(record.dump()); }

void Trainer::stop_after_write_failure() {
  const std::string what = metrics_.failed() ? metrics_.error() : run_log_write_error();
  // A checkpoint of this step is consistent only if metrics.jsonl holds every record up to it
  // (a resumed run writes the records after its checkpoint only).
  std::string saved;
  if (metrics_.retry_pending()) {
    try {
      saved = fmt::format("saved a last checkpoint, {}", save());
    } catch (const std::exception& e) {
      saved = fmt::format("the last checkpoint attempt failed too ({})", e.what());
    }
  } else {
    saved = fmt::format("no checkpoint of step {} was attempted, as metrics.jsonl lacks its "
                        "records", step_);
  }
  const std::string newest = latest_checkpoint(cfg_.run.out_dir);
  MOE_FAIL("{}. Training stopped after step {}: {}; the newest complete checkpoint is {}. Free "
           "space, then continue with moetrain --resume {}", what, step_, saved,
           newest.empty() ? std::string("none (the run restarts from step 0)") : newest,
           cfg_.run.out_dir);
}

Trainer::StepResult Trainer::train_step() {
  StepResult r;
  r.lr = learning_rate(cfg_.train, step_);
  const int64_t accum = cfg_.train.grad_accum;
  model_->zero_grad();
  for (int64_t micro = 0; micro < accum; ++micro) {
    // The global stream holds world micro-batches per micro-step; rank r trains on the r-th.
    // Every rank reads the whole stream, so its position (and a checkpoint) is the same on all.
    for (int r = 0; r < world_; ++r) data_.next_train_batch(r == rank_ ? batch_ : skipped_);
    model_->forward(batch_, /*need_grad=*/true);
    if (micro == accum - 1 && grad_sync_) grad_sync_->begin_last_backward();
    // Summed over ranks, this scale makes the gradient the mean over the global batch.
    model_->backward(1.0f / static_cast<float>(accum * world_));
    LossValues v = model_->loss_values();
    MOE_CHECK(std::isfinite(v.total), "the loss is not finite at step {} (micro-batch {}): lm {} "
              "lb {} z {} sp {} cp {}; lower train.lr or check the data", step_ + 1, micro, v.lm,
              v.lb, v.z, v.sp, v.cp);
    r.loss.lm += v.lm / accum;
    r.loss.lb += v.lb / accum;
    r.loss.z += v.z / accum;
    r.loss.sp += v.sp / accum;
    r.loss.cp += v.cp / accum;
    r.loss.total += v.total / accum;
    r.loss.n_tokens += v.n_tokens;
    tokens_seen_ += batch_.batch * batch_.seq * world_;
  }
  if (grad_sync_) grad_sync_->finish();
  optimizer_->reduce_scatter_grads();  // ZeRO-1 only
  reduce_losses(r.loss);
  r.grad_norm = optimizer_->grad_norm();
  MOE_CHECK(std::isfinite(r.grad_norm), "the gradient norm is not finite at step {}", step_ + 1);
  optimizer_->step(step_ + 1, r.lr, AdamW::clip_scale(r.grad_norm, cfg_.train.grad_clip));
  if (optimizer_->sharded()) model_->sync_lowp();  // the gathered parameters' bf16 copies
  if (cfg_.loss.balance == "bias") {
    if (world_ > 1) {
      for (Tensor& load : model_->balance_loads()) comm_->all_reduce_sum(load);
    }
    model_->update_balance_bias(static_cast<float>(cfg_.loss.bias_gamma));
  }
  ++step_;
  last_lr_ = r.lr;
  return r;
}

Trainer::ValidResult Trainer::validate() {
  ValidResult out;
  double nll_sum = 0;
  data_.reset_valid();
  // The validation batches are dealt round-robin over the ranks; the sums are reduced after.
  // With expert parallelism a forward pass is a collective of the expert group: a rank left
  // without a batch in the last round runs one more forward (on its first batch, not counted)
  // so that every rank runs as many.
  int64_t n_batches = 0, mine = 0;
  Batch first;
  for (int64_t i = 0; i < cfg_.run.eval_batches && data_.next_valid_batch(batch_); ++i) {
    ++n_batches;
    if (i == 0) first = batch_;
    if (i % world_ != rank_) continue;
    ++mine;
    model_->forward(batch_, /*need_grad=*/false);
    const std::vector<float> nll = model_->token_nll();
    for (size_t t = 0; t < nll.size(); ++t) {
      if (batch_.targets[t] >= 0) {
        nll_sum += nll[t];
        ++out.tokens;
      }
    }
    out.bytes += data_.target_bytes(batch_);
  }
  if (expert_comm_ && n_batches > 0) {
    for (int64_t rounds = (n_batches + world_ - 1) / world_; mine < rounds; ++mine) {
      model_->forward(first, /*need_grad=*/false);
    }
  }
  if (world_ > 1) {
    std::vector<double> sums = {nll_sum, static_cast<double>(out.tokens),
                                static_cast<double>(out.bytes)};
    comm_->all_reduce_sum_host(sums);
    nll_sum = sums[0];
    out.tokens = static_cast<int64_t>(std::llround(sums[1]));
    out.bytes = static_cast<int64_t>(std::llround(sums[2]));
  }
  if (out.tokens > 0) {
    out.loss = nll_sum / static_cast<double>(out.tokens);
    out.ppl = std::exp(out.loss);
    out.bpb = out.bytes > 0 ? nll_sum / (std::log(2.0) * static_cast<double>(out.bytes)) : 0;
  }
  return out;
}

void Trainer::log_step(const StepResult& r, double window_seconds, int64_t steps_in_window) {
  // The routing statistics of the last micro-batch of every rank (a collective: all ranks).
  routing::RoutingAccumulator acc;
  acc.add(model_->routing());
  if (world_ > 1) {
    std::vector<double> sums = acc.pack();
    comm_->all_reduce_sum_host(sums);
    acc.unpack(sums);
  }
  if (rank_ != 0) return;
  const double tokens_per_step = static_cast<double>(
      world_ * cfg_.train.grad_accum * cfg_.train.batch_size * cfg_.train.seq_len);
  const double tok_per_s = window_seconds > 0 ? tokens_per_step * steps_in_window / window_seconds : 0;
  // tokens/s counts every rank's tokens, the peak is one rank's: MFU is against all ranks' peaks.
  const double mfu =
      opts_.peak_flops > 0 ? flops_per_token_ * tok_per_s / (opts_.peak_flops * world_) : 0;
  const double sec_per_step = steps_this_process_ > 0 ? train_seconds_ / steps_this_process_ : 0;
  const double eta = sec_per_step * static_cast<double>(cfg_.train.max_steps - step_);

  std::string aux;
  for (const char* name : {"lb", "z", "sp", "cp"}) {
    if (!cfg_.loss.has(name)) continue;
    double v = name[0] == 'l' ? r.loss.lb : name[0] == 'z' ? r.loss.z
               : name[0] == 's' ? r.loss.sp : r.loss.cp;
    aux += fmt::format(" {} {:.4f}", name, v);
  }
  spdlog::info("step {:>6}/{} | loss {:.4f} | lm {:.4f}{} | lr {:.2e} | gnorm {:.3f} | {} tok/s"
               " | mfu {:.1f}% | eta {}", step_, cfg_.train.max_steps, r.loss.total, r.loss.lm,
               aux, r.lr, r.grad_norm, format_rate(tok_per_s), 100.0 * mfu, format_duration(eta));

  nlohmann::json rec = {{"type", "train"},      {"step", step_},
                        {"loss", r.loss.total}, {"lm", r.loss.lm},
                        {"lb", r.loss.lb},      {"z", r.loss.z},
                        {"sp", r.loss.sp},      {"cp", r.loss.cp},
                        {"lr", r.lr},           {"grad_norm", r.grad_norm},
                        {"tokens", tokens_seen_}, {"tok_per_s", tok_per_s},
                        {"mfu", mfu},           {"routing", routing_record(acc.finish())}};
  if (world_ > 1) {
    // Seconds per step rank 0 waited for gradient reductions the backward did not hide.
    const double waited = comm_wait_seconds();
    rec["comm_wait_s"] = steps_in_window > 0 ? (waited - logged_comm_wait_) / steps_in_window : 0;
    logged_comm_wait_ = waited;
    if (expert_comm_) {
      // Seconds per step rank 0 spent in the experts' all-to-alls (waiting for peers included).
      const double a2a = model_->expert_comm_seconds();
      rec["a2a_s"] = steps_in_window > 0 ? (a2a - logged_a2a_) / steps_in_window : 0;
      logged_a2a_ = a2a;
    }
  }
  write_metrics(rec);
}

void Trainer::log_valid(const ValidResult& v) {
  if (rank_ != 0) return;
  if (v.tokens == 0) {
    spdlog::warn("step {}: no validation data (data.valid is empty and valid_fraction gave no "
                 "held-out text); skipping validation", step_);
    return;
  }
  spdlog::info("step {:>6}/{} | valid loss {:.4f} | ppl {:.2f} | bpb {:.4f} | {} tokens", step_,
               cfg_.train.max_steps, v.loss, v.ppl, v.bpb, v.tokens);
  write_metrics({{"type", "valid"}, {"step", step_}, {"val_loss", v.loss}, {"val_ppl", v.ppl},
                 {"val_bpb", v.bpb}, {"val_tokens", v.tokens}, {"val_bytes", v.bytes}});
}

std::string Trainer::save() {
  // Rank 0 writes the checkpoint (atomically: complete or absent); the others wait, so no rank
  // runs ahead into a step that a crash during the save would have to repeat.
  optimizer_->gather_state();  // ZeRO-1: the moments of every rank (a collective)
  // Expert parallelism: the other shards' experts and moments (a collective of each group).
  CheckpointExtras extras;
  if (expert_comm_) extras = gather_expert_shards(*model_, *optimizer_, *expert_comm_, rank_ == 0);
  if (rank_ != 0) {
    comm_->barrier();
    return "";
  }
  TrainerState st;
  st.step = step_;
  st.tokens_seen = tokens_seen_;
  st.lr = last_lr_;
  st.data_state = data_.train_state();
  auto t0 = std::chrono::steady_clock::now();
  std::string dir;
  try {
    dir = save_checkpoint(cfg_.run.out_dir, cfg_, *model_, *optimizer_,
                          data_.tokenizer_model_bytes(), st, extras);
  } catch (const std::exception& e) {
    const std::string newest = latest_checkpoint(cfg_.run.out_dir);
    MOE_FAIL("cannot save the checkpoint of step {}: {}; the newest complete checkpoint is {} "
             "(free space, then continue with moetrain --resume {})", step_, e.what(),
             newest.empty() ? std::string("none") : newest, cfg_.run.out_dir);
  }
  prune_checkpoints(cfg_.run.out_dir, cfg_.run.keep_last);
  // The run's config.yaml describes its newest checkpoint (a resume with --set changes it here,
  // not before it has saved anything).
  const std::string run_config = (fs::path(cfg_.run.out_dir) / "config.yaml").string();
  const std::string yaml = config_to_yaml(cfg_);
  std::error_code ec;
  if (!fs::exists(run_config, ec) || read_file(run_config) != yaml) {
    write_file_atomic(run_config, yaml);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("saved checkpoint {} ({:.1f}s)", dir, secs);
  comm_->barrier();
  return dir;
}

TrainOutcome Trainer::run() {
  // Multi-process runs only: one rank alone cannot wait for a peer.
  Watchdog watchdog(world_ > 1 ? cfg_.run.step_timeout_s : 0.0, rank_);
  const int64_t last = opts_.stop_at_step > 0
                           ? std::min(opts_.stop_at_step, cfg_.train.max_steps)
                           : cfg_.train.max_steps;
  if (step_ >= last) {
    spdlog::info("nothing to do: the run is at step {} and stops at {} (extend it with --set "
                 "train.max_steps=...)", step_, last);
    return TrainOutcome::kFinished;
  }
  spdlog::info("training steps {}..{} of {} ({} params, {} active; {:.3g} GFLOP/token)",
               step_ + 1, last, cfg_.train.max_steps, params_total(cfg_.model),
               params_active(cfg_.model), flops_per_token_ / 1e9);
  double window_seconds = 0;
  int64_t window_steps = 0;
  while (step_ < last) {
    auto t0 = std::chrono::steady_clock::now();
    StepResult r = train_step();
    watchdog.beat("a training step");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    train_seconds_ += secs;
    window_seconds += secs;
    ++window_steps;
    ++steps_this_process_;
    // Logging and validation depend on the step only (not on where this process stops), so a
    // run stopped and resumed writes the same records as one that ran straight through.
    const bool final_step = step_ == last;
    if (step_ % cfg_.run.log_every == 0 || step_ == cfg_.train.max_steps) {
      log_step(r, window_seconds, window_steps);
      window_seconds = 0;
      window_steps = 0;
    }
    if (cfg_.run.eval_every > 0 &&
        (step_ % cfg_.run.eval_every == 0 || step_ == cfg_.train.max_steps)) {
      log_valid(validate());
      watchdog.beat("validation");
    }
    // A failed write to metrics.jsonl or train.log (a full disk) stops the run: see
    // docs/reliability.md.
    if (metrics_.failed() || !run_log_write_error().empty()) stop_after_write_failure();
    // A stop signal (core/stop_signals.h) is acted on here, at the step boundary: the step is
    // saved unless it just was (also when the signal came during that save), then the run
    // stops. Reaching the last step is an ordinary finish even when a signal came meanwhile.
    // A signal reaches the ranks at different times: they stop together when any has one.
    const bool periodic = cfg_.run.save_every > 0 && step_ % cfg_.run.save_every == 0;
    bool signalled = any_rank_signalled();
    bool saved = false;
    if (periodic || final_step || signalled) {
      save();
      saved = true;
      watchdog.beat("a checkpoint");
    }
    signalled = signalled || any_rank_signalled();
    if (!final_step && signalled) {
      if (!saved) save();
      if (rank_ == 0) {
        const int sig = stop_signal_received();
        spdlog::warn("stopped by {} after step {}; continue with --resume {}",
                     sig != 0 ? fmt::format("signal {} ({})", sig, strsignal(sig))
                              : std::string("a signal to another rank"),
                     step_, cfg_.run.out_dir);
      }
      return TrainOutcome::kInterrupted;
    }
  }
  return step_ == cfg_.train.max_steps ? TrainOutcome::kFinished : TrainOutcome::kStopped;
}

}  // namespace moe
