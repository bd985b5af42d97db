// moetrain's setup steps (see run_setup.h).
#include "train/run_setup.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/file.h>
#include <unistd.h>
#include <fstream>
#include <mutex>

#include <omp.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "data/corpus.h"
#include "model/param_count.h"
#include "checkpoint/checkpoint.h"
#include "core/cpu_peak.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> g_early_lines;
std::mutex g_log_error_mutex;
std::string g_log_error;  // the first failed write to train.log

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) { b /= 1024; ++u; }
  return fmt::format("{:.1f} {}", b, units[u]);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

}  // namespace

std::string find_resume_checkpoint(const std::string& resume_dir) {
  const std::string ckpt = resolve_resume_checkpoint(resume_dir);
  verify_checkpoint(ckpt);
  const std::string run_dir = run_dir_of_checkpoint(ckpt);
  const std::string newest = latest_checkpoint(run_dir);
  MOE_USAGE_CHECK(newest.empty() || fs::equivalent(newest, ckpt),
                  "--resume {}: {} is not the newest checkpoint of its run ({} is); continuing "
                  "it would overwrite the newer ones. Resume from the newest, or move the newer "
                  "checkpoints away first", resume_dir, ckpt, newest);
  return ckpt;
}

bool check_fresh_run_dir(const std::string& out_dir) {
  const bool has_checkpoints = !list_checkpoints(out_dir).empty();
  MOE_USAGE_CHECK(!has_checkpoints,
                  "run.out_dir '{}' already holds a run (checkpoints/); pass --resume {} to "
                  "continue it, or choose another run.out_dir (moetrain never overwrites a run "
                  "that has a checkpoint)", out_dir, out_dir);
  return is_run_without_checkpoint(out_dir);
}

bool is_run_without_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  const fs::path d(dir);
  if (fs::exists(d / "trainer_state.json") || fs::exists(d / "manifest.json")) return false;
  if (!list_checkpoints(dir).empty()) return false;
  for (const char* f : {"config.yaml", "metrics.jsonl", "train.log", "checkpoints"}) {
    if (fs::exists(d / f)) return true;
  }
  return false;
}

void check_run_dir_not_in_use(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // unreadable: the checks that follow name the problem
  // A shared, non-blocking probe: fails only while a moetrain holds the directory's exclusive
  // lock (lock_run_dir), and never conflicts with other ranks probing at the same time.
  const bool busy = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the probe's lock
  MOE_USAGE_CHECK(!busy, "run.out_dir '{}' is in use by another moetrain process; wait for it "
                  "to finish (or stop it) first", dir);
}

void lock_run_dir(const std::string& out_dir) {
  static int held_fd = -1;  // open for the life of the process: the lock lives with it
  if (held_fd >= 0) return;
  fs::create_directories(out_dir);
  int fd = ::open(out_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MOE_CHECK(fd >= 0, "cannot open run directory '{}': {}", out_dir, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    MOE_USAGE_CHECK(err != EWOULDBLOCK, "run.out_dir '{}' is in use by another moetrain "
                    "process; wait for it to finish (or stop it) first", out_dir);
    MOE_FAIL("cannot lock run directory '{}': {}", out_dir, std::strerror(err));
  }
  held_fd = fd;
}

namespace {

// "<name>.tmp-<pid>" -> pid, or -1 when the name is not a temporary of that form.
long temporary_pid(const std::string& name) {
  const size_t at = name.rfind(".tmp-");
  if (at == std::string::npos || at + 5 >= name.size()) return -1;
  long pid = 0;
  for (size_t i = at + 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 100000000) return -1;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}

bool process_is_gone(long pid) {
  if (pid == static_cast<long>(::getpid())) return true;  // a crashed run whose PID we reuse
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

void remove_stale_in(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const long pid = temporary_pid(name);
    if (pid <= 0 || !process_is_gone(pid)) continue;
    std::error_code rm;
    const auto removed = fs::remove_all(entry.path(), rm);
    if (rm) {
      spdlog::warn("could not remove {} (left by process {}, which has ended): {}",
                   entry.path().string(), pid, rm.message());
    } else {
      spdlog::info("removed {} ({} entries), left by process {}, which has ended",
                   entry.path().string(), removed, pid);
    }
  }
}

}  // namespace

void remove_stale_temporaries(const std::string& out_dir) {
  remove_stale_in(out_dir);
  remove_stale_in(checkpoints_root(out_dir));
}

void discard_partial_run(const std::string& out_dir) {
  std::vector<std::string> found;
  for (const char* f : {"metrics.jsonl", "train.log"}) {
    if (fs::exists(fs::path(out_dir) / f)) found.push_back(f);
  }
  spdlog::warn("run.out_dir '{}' holds a run stopped before its first checkpoint; starting it "
               "again from step 0{}", out_dir,
               found.empty() ? std::string() : fmt::format(" and replacing its {}",
                                                           fmt::join(found, " and ")));
  for (const auto& f : found) fs::remove(fs::path(out_dir) / f);
}

PeakFlops peak_flops(const TrainConfig& train, double peak_tflops_flag) {
  if (peak_tflops_flag > 0) return {peak_tflops_flag * 1e12, "--peak-tflops"};
  if (train.device == "cpu") {
    const int threads = train.threads > 0 ? static_cast<int>(train.threads) : omp_get_max_threads();
    const CpuPeak cpu = estimate_cpu_peak(threads);
    return {cpu.flops_per_second, cpu.basis};
  }
  return train.dtype == "bf16"
             ? PeakFlops{989e12, "H100/H200 dense bf16 tensor-core peak"}
             : PeakFlops{495e12, "H100/H200 dense tf32 tensor-core peak"};
}

std::string dry_run_report(const Config& cfg, double peak, const DryRunLayout& layout) {
  const int world = std::max(1, layout.ranks);
  const ModelConfig& m = cfg.model;
  const TrainConfig& t = cfg.train;
  const bool assumed_vocab = m.vocab_size == 0;
  const int64_t vocab = assumed_vocab ? cfg.data.tokenizer_vocab_size : m.vocab_size;
  const ParamCounts pc = count_params(m, vocab);
  const double fpt = flops_per_token(m, vocab, t.seq_len);
  const int64_t tokens_per_step = t.batch_size * t.seq_len * t.grad_accum;
  const bool bf16 = t.dtype == "bf16";
  // f32 master weights + f32 grads + AdamW m and v, plus the bf16 compute copy on bf16 runs.
  const double state_bytes = static_cast<double>(pc.total) * (16 + (bf16 ? 2 : 0));
  const ActivationMemory act = estimate_activation_memory(
      m, vocab, t.batch_size, t.seq_len, bf16 ? DType::kBF16 : DType::kF32, true);
  std::string r;
  r += fmt::format("model: {} ({} layers, d_model {}, {} heads / {} kv, {} routed experts top-{}, "
                   "{} shared, {} dense layers), vocab {}{}\n",
                   m.arch, m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.n_experts, m.top_k,
                   m.n_shared_experts, m.dense_layers, vocab,
                   assumed_vocab ? " (assumed: data.tokenizer_vocab_size)" : "");
  r += fmt::format("parameters: {} total, {} active per token ({} total / {} active)\n",
                   human_count(static_cast<double>(pc.total)),
                   human_count(static_cast<double>(pc.active)), pc.total, pc.active);
  r += fmt::format("  embedding {}, lm_head {}, attention {}, router {}, dense ffn {}, routed "
                   "experts {} ({} active), shared experts {}, norms {}\n",
                   pc.embedding, pc.lm_head, pc.attention, pc.router, pc.dense_ffn,
                   pc.routed_experts, pc.routed_active, pc.shared_experts, pc.norms);
  r += fmt::format("compute: {:.3g} GFLOP per token (forward + backward), {} tokens per step, "
                   "{:.3g} TFLOP per step, {:.3g} PFLOP for {} steps\n",
                   fpt / 1e9, tokens_per_step, fpt * tokens_per_step / 1e12,
                   fpt * tokens_per_step * t.max_steps / 1e15, t.max_steps);
  r += fmt::format("memory on {} ({}): weights + grads + AdamW {}, activations {} per "
                   "micro-batch of {}x{}, total about {}\n",
                   t.device, t.dtype, human_bytes(state_bytes), human_bytes(act.total_bytes),
                   t.batch_size, t.seq_len, human_bytes(state_bytes + act.total_bytes));
  // Data parallel over `world` ranks: every rank holds the weights, the grads and its activations;
  // ZeRO-1 splits the AdamW moments (8 bytes per parameter) over the ranks, at the price of one
  // full-size f32 gather buffer (4 bytes per parameter).
  {
    const double total = static_cast<double>(pc.total);
    const double base = total * (8 + (bf16 ? 2 : 0)) + act.total_bytes;
    const double plain = base + total * 8;
    const double zero1 = base + total * 8 / world + (world > 1 ? total * 4 : 0);
    r += fmt::format("memory per rank with {} rank{} (global batch {} sequences): {} plain data "
                     "parallel, {} with ZeRO-1 (train.zero: 1; AdamW moments split {} ways){}\n",
                     world, world > 1 ? "s" : "", world * t.batch_size * t.grad_accum,
                     human_bytes(plain), human_bytes(zero1), world,
                     t.zero == 1 ? ", selected" : "");
  }
  // Communication per step and rank, ring algorithms (what NCCL and Open MPI use for large
  // messages): an all-reduce of B bytes sends and receives 2 (N-1)/N B per rank; ZeRO-1's
  // reduce-scatter of the f32 gradients plus all-gather of the f32 parameters as much. The
  // reductions of losses, statistics and bias loads are a few KB and left out.
  const int64_t ep = t.expert_parallel;
  const bool ep_ok = ep > 1 && world % ep == 0 && m.n_experts % ep == 0;
  if (ep > 1 && !ep_ok) {
    r += fmt::format("expert parallel {}: not possible on {} rank{} with {} routed experts (it "
                     "must divide both)\n", ep, world, world > 1 ? "s" : "", m.n_experts);
  }
  if (ep_ok) {
    // Every rank holds 1/ep of the routed experts (weights, grads, AdamW: 16 bytes each; 18 on
    // bf16 runs); the rest is replicated.
    const double expert_state = static_cast<double>(pc.routed_experts) * (16 + (bf16 ? 2 : 0));
    r += fmt::format("memory per rank with expert parallel {} (train.expert_parallel): {} "
                     "routed-expert state instead of {}, total about {}\n", ep,
                     human_bytes(expert_state / ep), human_bytes(expert_state),
                     human_bytes(state_bytes - expert_state * (1.0 - 1.0 / ep) +
                                 act.total_bytes));
    // The all-to-alls of one step and rank: per MoE layer and micro-batch, the R = batch x seq x
    // top_k dispatched rows send x (d) forward and receive y (d) and z (f, for sp and the
    // statistics) back; backward sends dy (d), with sp on the sp gradient of z (f), and receives
    // dx (d). With balanced routing a fraction (ep - 1) / ep of the rows leave the rank.
    const int64_t moe_layers = m.n_layers - m.dense_layers;
    const double rows = static_cast<double>(t.batch_size * t.seq_len * m.top_k * t.grad_accum *
                                            moe_layers);
    const double act_bytes = bf16 ? 2 : 4;
    const double fwd = rows * (2.0 * m.d_model + m.expert_ffn_dim) * act_bytes;
    const bool sp = std::find(cfg.loss.losses.begin(), cfg.loss.losses.end(), "sp") !=
                    cfg.loss.losses.end();
    const double bwd = rows * (2.0 * m.d_model + (sp ? m.expert_ffn_dim : 0)) * act_bytes;
    const double leave = static_cast<double>(ep - 1) / ep;
    r += fmt::format("all-to-all per step and rank (expert parallel {}): {} rows x {} MoE layers "
                     "x {} micro-batches; forward {} (x out; y, z back), backward {} (dy{} out; "
                     "dx back); {} sent + {} received per rank with balanced routing ({:.0f}% "
                     "of the rows leave the rank), 6 all-to-alls per layer and micro-batch{}\n",
                     ep, t.batch_size * t.seq_len * m.top_k, moe_layers, t.grad_accum,
                     human_bytes(fwd), human_bytes(bwd), sp ? ", sp grad of z" : "",
                     human_bytes((fwd + bwd) * leave), human_bytes((fwd + bwd) * leave),
                     100 * leave, sp ? " (7 with sp)" : "");
    for (double gbs : layout.link_gb_per_s) {
      r += fmt::format("  at {:g} GB/s per link: {:.3g} s per step for the all-to-alls\n", gbs,
                       (fwd + bwd) * leave / (gbs * 1e9));
    }
  }
  if (world > 1) {
    double grad_bytes = static_cast<double>(pc.total) * 4;
    double per_rank = 2.0 * (world - 1) / world * grad_bytes;
    if (ep_ok) {
      // The routed experts' gradients (1/ep of them on a rank) are summed only over the
      // world / ep ranks that hold the same shard.
      const double experts = static_cast<double>(pc.routed_experts) * 4 / ep;
      const double replicas = static_cast<double>(world / ep);
      grad_bytes = static_cast<double>(pc.total - pc.routed_experts) * 4 + experts;
      per_rank = 2.0 * (world - 1) / world * (grad_bytes - experts) +
                 2.0 * (replicas - 1) / replicas * experts;
    }
    const double bucket = t.grad_bucket_mb * (1 << 20);
    r += fmt::format("communication per step and rank ({} ranks): {}: {} of f32 gradients, "
                     "{} sent + {} received per rank{}\n", world,
                     t.zero == 1 ? "reduce-scatter + all-gather (ZeRO-1)"
                                 : "gradient all-reduce",
                     human_bytes(grad_bytes), human_bytes(per_rank), human_bytes(per_rank),
                     t.zero == 1 ? "" : fmt::format(", in {:.0f} buckets of {}",
                                                    std::ceil(grad_bytes / bucket),
                                                    human_bytes(bucket)));
    for (double gbs : layout.link_gb_per_s) {
      r += fmt::format("  at {:g} GB/s per link: {:.3g} s per step for the gradients\n", gbs,
                       per_rank / (gbs * 1e9));
    }
  }
  r += fmt::format("time at 100% of the assumed peak {:.3g} TFLOP/s: {:.3g} s per step; at 40% "
                   "MFU: {:.3g} h for the run\n",
                   peak / 1e12, fpt * tokens_per_step / peak,
                   fpt * tokens_per_step * t.max_steps / (0.4 * peak) / 3600);
  return r;
}

std::string check_data_paths(const Config& cfg) {
  MOE_USAGE_CHECK(!cfg.data.train.empty(), "data.train: expected at least one corpus path "
                  "(a file, directory, glob or .jsonl file), found none");
  auto summary = [](const std::vector<data::SourceFile>& files) {
    uint64_t bytes = 0;
    for (const auto& f : files) bytes += f.size_bytes;
    return fmt::format("{} file{} ({})", files.size(), files.size() == 1 ? "" : "s",
                       human_bytes(static_cast<double>(bytes)));
  };
  std::string r = "data: train " + summary(data::resolve_sources(cfg.data.train, "data.train"));
  if (cfg.data.valid.empty()) {
    r += fmt::format(", valid: {} of the training documents held out", cfg.data.valid_fraction);
  } else {
    r += ", valid " + summary(data::resolve_sources(cfg.data.valid, "data.valid"));
  }
  if (cfg.data.tokenizer.empty()) {
    r += fmt::format(", tokenizer: trained ({} pieces)", cfg.data.tokenizer_vocab_size);
  } else {
    std::error_code ec;
    MOE_USAGE_CHECK(fs::is_regular_file(cfg.data.tokenizer, ec),
                    "data.tokenizer: no such file: {}", cfg.data.tokenizer);
    r += ", tokenizer: " + cfg.data.tokenizer;
  }
  return r + "\n";
}

void setup_console_logging(const std::string& level) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  g_early_lines = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096);
  auto logger = std::make_shared<spdlog::logger>(
      "moe", spdlog::sinks_init_list{console, g_early_lines});
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

void attach_run_log(const std::string& out_dir) {
  fs::create_directories(out_dir);
  const std::string path = (fs::path(out_dir) / "train.log").string();
  auto logger = spdlog::default_logger();
  if (g_early_lines) {
    std::ofstream out(path, std::ios::app);
    for (const auto& line : g_early_lines->last_formatted()) out << line;
    out.flush();
    if (!out.good()) {
      std::lock_guard<std::mutex> lock(g_log_error_mutex);
      g_log_error = fmt::format("cannot write '{}'", path);
    }
    auto& sinks = logger->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), g_early_lines), sinks.end());
    g_early_lines.reset();
  }
  logger->sinks().push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, false));
  logger->flush_on(spdlog::level::trace);
  // spdlog reports a sink's failed write here (it would otherwise print it and go on).
  logger->set_error_handler([path](const std::string& msg) {
    std::lock_guard<std::mutex> lock(g_log_error_mutex);
    if (g_log_error.empty()) g_log_error = fmt::format("cannot write '{}': {}", path, msg);
  });
}

std::string run_log_write_error() {
  std::lock_guard<std::mutex> lock(g_log_error_mutex);
  return g_log_error;
}

}  // namespace moe
