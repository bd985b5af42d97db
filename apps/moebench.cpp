// moebench: training-step throughput of the C++ model on one device.
//
// Measures, for one model config: tokens/s of full training steps (forward, backward, global-norm
// clipping, AdamW), MFU against the device's peak (--peak-tflops; by default on CUDA an H100/H200's
// dense 989 TFLOP/s bf16 or 495 tf32, on CPU this CPU's f32 FMA peak, core/cpu_peak.h) and against the
// GEMM rate the benchmark measures itself on the same backend, a step-time breakdown by op family
// (a separate profiled pass that synchronises around every op), and the sp+cp overhead (step time
// with losses lb,sp,cp over step time with lb alone). Writes a JSON report with --json.
//
//   moebench --preset small|0.4b [--config FILE.yaml] [--set key=value ...] [--device cuda]
//            [--dtype bf16] [--steps 20] [--warmup 3] [--json out.json]
//            (--set train.attention=native|cudnn selects the attention implementation)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "backend/backend.h"
#include "bench/profiling_backend.h"
#include "config/config.h"
#include "model/model.h"
#include "train/run_setup.h"
#include "train/optimizer.h"

namespace moe {
namespace {

struct Options {
  std::string preset = "small", config_path, device = "cuda", dtype = "bf16", json_path;
  std::vector<std::string> overrides;
  int64_t steps = 20, warmup = 3, profile_steps = 3, gemm_size = 8192;
  double peak_tflops = 0;  // 0: the device's default peak (see the top of the file)
  bool skip_overhead = false, skip_gemm = false;
};

// Built-in shapes; a --config file replaces them. "0.4b" is the model and micro-batch of
// configs/paper_0.4b_vanilla.yaml (399M total, 173M active parameters, vocabulary 32000).
Config preset_config(const std::string& name) {
  Config c;
  c.loss.losses = {"lb"};
  if (name == "tiny") {  // CPU smoke test of the benchmark itself
    c.model.vocab_size = 256; c.model.d_model = 64; c.model.n_layers = 2; c.model.n_heads = 4;
    c.model.n_kv_heads = 2; c.model.n_experts = 4; c.model.top_k = 2;
    c.model.expert_ffn_dim = 64; c.model.ffn_dim = 128; c.model.max_seq_len = 32;
    c.train.batch_size = 2; c.train.seq_len = 32;
  } else if (name == "small") {
    c.model.vocab_size = 4096; c.model.d_model = 256; c.model.n_layers = 4; c.model.n_heads = 4;
    c.model.n_kv_heads = 2; c.model.n_experts = 8; c.model.top_k = 2;
    c.model.expert_ffn_dim = 512; c.model.ffn_dim = 1024; c.model.max_seq_len = 256;
    c.train.batch_size = 32; c.train.seq_len = 256;
  } else if (name == "0.4b") {
    c.model.vocab_size = 32000; c.model.d_model = 1024; c.model.n_layers = 12;
    c.model.n_heads = 16; c.model.n_kv_heads = 4; c.model.n_experts = 8; c.model.top_k = 2;
    c.model.expert_ffn_dim = 1024; c.model.ffn_dim = 4096; c.model.max_seq_len = 1024;
    c.model.tie_embeddings = false;
    c.train.batch_size = 16; c.train.seq_len = 1024;
  } else {
    MOE_USAGE_FAIL("--preset: expected tiny, small or 0.4b, found '{}'", name);
  }
  return c;
}

Batch random_batch(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
  Batch b;
  b.batch = batch;
  b.seq = seq;
  std::vector<int32_t> stream(static_cast<size_t>(batch * seq + 1));
  for (auto& t : stream) t = pick(rng);
  b.inputs.assign(stream.begin(), stream.end() - 1);
  b.targets.assign(stream.begin() + 1, stream.end());
  return b;
}

// One training step as the trainer does it: forward, backward, global-norm clipping (one
// download per step) and AdamW (lib/train/optimizer.h).
class Stepper {
 public:
  Stepper(MoeModel& model, Backend& be, const TrainConfig& train)
      : model_(model), opt_(be, model.params(), train, model.param_groups()),
        clip_(train.grad_clip) {}
  void step(const Batch& batch) {
    model_.zero_grad();
    model_.forward(batch, true);
    model_.backward(1.0f);
    const double norm = opt_.grad_norm();
    opt_.step(++t_, 1e-4, AdamW::clip_scale(norm, clip_));
  }

 private:
  MoeModel& model_;
  AdamW opt_;
  double clip_;
  int64_t t_ = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


// One model configuration ready to step: its own model, optimizer state and batch, on a
// profiling wrapper of the shared backend.
class Runner {
 public:
  Runner(const Config& cfg, const Options& opt, Backend& raw)
      : be_(raw),
        model_(cfg.model, cfg.loss, be_, cfg.train.batch_size, cfg.train.seq_len,
               opt.dtype == "bf16" ? DType::kBF16 : DType::kF32),
        tokens_(cfg.train.batch_size * cfg.train.seq_len) {
    model_.init_parameters(1234);
    stepper_ = std::make_unique<Stepper>(model_, be_, cfg.train);
    batch_ = random_batch(cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size, 42);
    for (int64_t i = 0; i < opt.warmup; ++i) stepper_->step(batch_);
    be_.synchronize();
  }
  // Seconds per step over `steps` steps.
  double time_steps(int64_t steps) {
    be_.synchronize();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) stepper_->step(batch_);
    be_.synchronize();
    return seconds_since(t0) / double(steps);
  }
  // Shares of the step time per op family, from steps that synchronise around every op.
  std::map<std::string, double> profile(int64_t steps) {
    be_.reset();
    be_.set_enabled(true);
    for (int64_t i = 0; i < steps; ++i) stepper_->step(batch_);
    be_.set_enabled(false);
    std::map<std::string, double> share;
    double total = 0;
    auto fam = be_.family_seconds();
    for (auto& [name, sec] : fam) total += sec;
    for (auto& [name, sec] : fam)
      if (sec > 0) share[name] = total > 0 ? sec / total : 0.0;
    profiled_step_seconds_ = total / double(steps);
    return share;
  }
  MoeModel& model() { return model_; }
  int64_t tokens_per_step() const { return tokens_; }
  // Step time of the last profile (sum of the synchronised op times, per step).
  double profiled_step_seconds() const { return profiled_step_seconds_; }

 private:
  ProfilingBackend be_;
  MoeModel model_;
  std::unique_ptr<Stepper> stepper_;
  Batch batch_;
  int64_t tokens_;
  double profiled_step_seconds_ = 0;
};

// Best (minimum) seconds per step of each runner over `rounds` alternating rounds, so drift of
// the machine (clocks, other load) affects both configurations alike.
std::vector<double> best_step_seconds(std::vector<Runner*> runners, int64_t steps, int rounds) {
  std::vector<double> best(runners.size(), 1e300);
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < runners.size(); ++i)
      best[i] = std::min(best[i], runners[i]->time_steps(steps));
  return best;
}

// Dense GEMM rate of this backend: y[M, N] = x[M, K] w[N, K]^T, M = N = K = size.
double measure_gemm_tflops(Backend& be, DType dtype, int64_t size) {
  Tensor x = be.empty({size, size}, dtype), w = be.empty({size, size}, dtype);
  Tensor y = be.empty({size, size}, dtype);
  be.fill(x, 0.01);
  be.fill(w, 0.02);
  be.matmul_forward(y, x, w, false);
  be.synchronize();
  const int iters = 10;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) be.matmul_forward(y, x, w, false);
  be.synchronize();
  double s = seconds_since(t0);
  return 2.0 * double(size) * double(size) * double(size) * iters / s / 1e12;
}

int run(int argc, char** argv) {
  Options opt;
  CLI::App app{"moebench: training-step throughput, MFU, op breakdown, sp+cp overhead"};
  app.add_option("--preset", opt.preset, "built-in shape: tiny, small or 0.4b");
  app.add_option("--config", opt.config_path, "a moetrain YAML config (replaces the preset)");
  app.add_option("--set", opt.overrides, "key.path=value overrides");
  app.add_option("--device", opt.device, "cpu, cuda or cuda:N");
  app.add_option("--dtype", opt.dtype, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--steps", opt.steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", opt.warmup, "untimed steps first");
  app.add_option("--profile-steps", opt.profile_steps, "steps of the per-op profile");
  app.add_option("--gemm-size", opt.gemm_size, "M = N = K of the GEMM-rate measurement");
  app.add_option("--peak-tflops", opt.peak_tflops,
                 "dense peak of the device (default: H100/H200 989 bf16 / 495 tf32 on CUDA, this "
                 "CPU's f32 FMA peak for the OpenMP threads on CPU)");
  app.add_flag("--skip-overhead", opt.skip_overhead, "do not run the lb-only / lb,sp,cp pair");
  app.add_flag("--skip-gemm", opt.skip_gemm, "do not measure the GEMM rate");
  app.add_option("--json", opt.json_path, "write the report here");
  CLI11_PARSE(app, argc, argv);

  Config cfg = opt.config_path.empty() ? preset_config(opt.preset)
                                       : load_config(opt.config_path, opt.overrides);
  if (opt.config_path.empty())
    for (const auto& o : opt.overrides) apply_override(cfg, o);
  MOE_USAGE_CHECK(cfg.model.vocab_size > 0, "moebench needs model.vocab_size > 0 (no tokenizer "
                  "is loaded); set it with --set model.vocab_size=N");
  auto backend = make_backend(opt.device);
  // --set train.attention=native|cudnn picks the attention implementation (tools/bench_attention.sh
  // runs the 0.4b preset with each).
  backend->set_attention_impl(parse_attention_impl(cfg.train.attention, "train.attention"));
  DType dtype = opt.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  // The same default peak as moetrain's MFU (train/run_setup.h), for this device and dtype, with
  // the OpenMP threads this process runs.
  TrainConfig peak_train = cfg.train;
  peak_train.device = opt.device;
  peak_train.dtype = opt.dtype;
  peak_train.threads = 0;
  const PeakFlops peak = peak_flops(peak_train, opt.peak_tflops);
  opt.peak_tflops = peak.flops / 1e12;
  const std::string peak_basis = peak.basis;

  nlohmann::json report;
  report["device"] = backend->name();
  report["dtype"] = opt.dtype;
  report["attention"] = cfg.train.attention;
  report["preset"] = opt.config_path.empty() ? opt.preset : opt.config_path;
  report["batch_size"] = cfg.train.batch_size;
  report["seq_len"] = cfg.train.seq_len;
  report["steps"] = opt.steps;

  Config with_lb = cfg;
  with_lb.loss.losses = {"lb"};
  Runner lb(with_lb, opt, *backend);
  std::unique_ptr<Runner> spcp;
  if (!opt.skip_overhead) {
    Config all = cfg;
    all.loss.losses = {"lb", "sp", "cp"};
    spcp = std::make_unique<Runner>(all, opt, *backend);
  }
  std::vector<Runner*> runners = {&lb};
  if (spcp) runners.push_back(spcp.get());
  const std::vector<double> best = best_step_seconds(runners, opt.steps, 3);
  const double lb_step = best[0], lb_tps = double(lb.tokens_per_step()) / lb_step;
  const double fpt = lb.model().flops_per_token();
  const auto lb_share = lb.profile(opt.profile_steps);
  report["params_total"] = lb.model().n_params_total();
  report["params_active"] = lb.model().n_params_active();
  report["flops_per_token"] = fpt;
  report["lb"] = {{"step_seconds", lb_step}, {"tokens_per_second", lb_tps},
                  {"breakdown_share", lb_share},
                  {"profiled_step_seconds", lb.profiled_step_seconds()}};
  const double achieved_tflops = fpt * lb_tps / 1e12;
  report["achieved_tflops"] = achieved_tflops;
  report["mfu_vs_peak"] = achieved_tflops / opt.peak_tflops;
  report["peak_tflops"] = opt.peak_tflops;
  report["peak_basis"] = peak_basis;
  spdlog::info("{} {}: {:.0f} tokens/s, {:.4f} s/step, {:.2f} TFLOP/s ({:.1f}% of {} peak)",
               backend->name(), opt.dtype, lb_tps, lb_step, achieved_tflops,
               100.0 * achieved_tflops / opt.peak_tflops, opt.peak_tflops);
  if (!opt.skip_gemm) {
    // 8192^3 is a fair GPU size; on a CPU it would take minutes, so cap it there.
    const int64_t size = backend->device() == Device::kCpu ? std::min<int64_t>(opt.gemm_size, 512)
                                                            : opt.gemm_size;
    double gemm = measure_gemm_tflops(*backend, dtype, size);
    report["gemm_size"] = size;
    report["gemm_tflops"] = gemm;
    report["mfu_vs_gemm"] = achieved_tflops / gemm;
    spdlog::info("measured GEMM rate {:.2f} TFLOP/s: MFU vs GEMM {:.1f}%", gemm,
                 100.0 * achieved_tflops / gemm);
  }
  if (spcp) {
    const double spcp_step = best[1];
    report["lb_sp_cp"] = {{"step_seconds", spcp_step},
                          {"tokens_per_second", double(spcp->tokens_per_step()) / spcp_step},
                          {"breakdown_share", spcp->profile(opt.profile_steps)},
                          {"profiled_step_seconds", spcp->profiled_step_seconds()}};
    report["sp_cp_overhead"] = spcp_step / lb_step;
    spdlog::info("sp+cp overhead: step time x{:.4f} ({:+.2f}%)", spcp_step / lb_step,
                 100.0 * (spcp_step / lb_step - 1.0));
  }
  for (auto& [name, share] : lb_share)
    spdlog::info("  {:<16} {:5.1f}% of the profiled step", name, 100.0 * share);
  std::string text = report.dump(2);
  if (!opt.json_path.empty()) {
    std::ofstream out(opt.json_path);
    MOE_CHECK(out.good(), "--json: cannot write {}", opt.json_path);
    out << text << "\n";
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  try {
    return moe::run(argc, argv);
  } catch (const moe::Error& e) {
    spdlog::error("{} ({})", e.what(), e.where());
    return e.exit_code();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
