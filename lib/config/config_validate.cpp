// validate(): the range and consistency checks of a Config (every message names the key, the
// expected range and the value found; all are usage errors, exit code 2).
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <type_traits>

#include "config/config.h"
#include "config/config_internal.h"
#include "core/checked.h"
#include "core/error.h"

namespace moe {
namespace {

// ---- range checks --------------------------------------------------------------------------

// Upper limits of the size keys, far above any model this code can train. They keep each key
// sane; the products of sizes (parameter counts, buffer sizes, memory estimates) can still pass
// int64 within these limits, so those are checked where they are formed (core/checked.h:
// count_params, the model's parameter groups, every allocation), each a usage error naming the
// keys.
constexpr int64_t kMaxWidth = int64_t{1} << 20;     // d_model, head_dim, ffn widths
constexpr int64_t kMaxCount = int64_t{1} << 16;     // layers, heads, experts
constexpr int64_t kMaxVocab = int64_t{1} << 24;     // vocabulary sizes
constexpr int64_t kMaxTokens = int64_t{1} << 24;    // seq_len, max_seq_len, batch_size
constexpr int64_t kMaxThreads = 1024;               // train.threads
constexpr int64_t kMaxSteps = int64_t{1} << 40;     // step counts and intervals
constexpr double kMaxCoef = 1e6;                    // loss coefficients, grad_clip

// Every float key is finite (YAML's .inf and .nan are refused) and, unless it is 0, a normal
// double: config_to_yaml writes what was read, and a subnormal value would not read back.
void check_float(const char* key, double value) {
  MOE_USAGE_CHECK(std::isfinite(value), "{}: expected a finite number, found {}", key, value);
  MOE_USAGE_CHECK(value == 0 || std::fabs(value) >= std::numeric_limits<double>::min(),
                  "{}: expected 0 or a number of magnitude >= {}, found {}", key,
                  std::numeric_limits<double>::min(), value);
}

template <typename T>
void check_min(const char* key, T value, T lo) {
  if constexpr (std::is_floating_point_v<T>) check_float(key, value);
  MOE_USAGE_CHECK(value >= lo, "{}: expected a value >= {}, found {}", key, lo, value);
}
template <typename T>
void check_max(const char* key, T value, T hi) {
  if constexpr (std::is_floating_point_v<T>) check_float(key, value);
  MOE_USAGE_CHECK(value <= hi, "{}: expected a value <= {}, found {}", key, hi, value);
}
void check_positive(const char* key, int64_t value) {
  MOE_USAGE_CHECK(value > 0, "{}: expected a positive integer, found {}", key, value);
}
void check_positive(const char* key, double value) {
  check_float(key, value);
  MOE_USAGE_CHECK(value > 0, "{}: expected a positive number, found {}", key, value);
}
// [lo, hi) when open_hi, else [lo, hi]
void check_range(const char* key, double value, double lo, double hi, bool open_hi) {
  check_float(key, value);
  bool ok = value >= lo && (open_hi ? value < hi : value <= hi);
  MOE_USAGE_CHECK(ok, "{}: expected a value in [{}, {}{}, found {}", key, lo, hi,
                  open_hi ? ")" : "]", value);
}
void check_choice(const char* key, const std::string& value,
                  std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (value == c) return;
    list += (list.empty() ? "" : ", ") + std::string(c);
  }
  MOE_USAGE_FAIL("{}: expected one of {}, found '{}'", key, list, value);
}

void validate_model(const ModelConfig& m) {
  check_choice("model.arch", m.arch, {"vanilla", "deepseek"});
  check_min<int64_t>("model.vocab_size", m.vocab_size, 0);
  check_positive("model.d_model", m.d_model);
  check_positive("model.n_layers", m.n_layers);
  check_positive("model.n_heads", m.n_heads);
  check_positive("model.n_kv_heads", m.n_kv_heads);
  MOE_USAGE_CHECK(m.n_heads % m.n_kv_heads == 0,
                  "model.n_heads: expected a multiple of model.n_kv_heads ({}), found {}",
                  m.n_kv_heads, m.n_heads);
  check_min<int64_t>("model.head_dim", m.head_dim, 0);
  if (m.head_dim == 0) {
    MOE_USAGE_CHECK(m.d_model % m.n_heads == 0,
                    "model.d_model: expected a multiple of model.n_heads ({}) when "
                    "model.head_dim is 0, found {} (or set model.head_dim)", m.n_heads, m.d_model);
  }
  MOE_USAGE_CHECK(m.resolved_head_dim() % 2 == 0,
                  "model.head_dim: RoPE pairs dimensions, expected an even head size, found {}",
                  m.resolved_head_dim());
  check_positive("model.ffn_dim", m.ffn_dim);
  check_positive("model.n_experts", m.n_experts);
  check_positive("model.top_k", m.top_k);
  MOE_USAGE_CHECK(m.top_k <= m.n_experts,
                  "model.top_k: expected a value <= model.n_experts ({}), found {}", m.n_experts,
                  m.top_k);
  check_positive("model.expert_ffn_dim", m.expert_ffn_dim);
  check_min<int64_t>("model.n_shared_experts", m.n_shared_experts, 0);
  if (m.arch == "vanilla") {
    MOE_USAGE_CHECK(m.n_shared_experts == 0,
                    "model.n_shared_experts: expected 0 for model.arch 'vanilla', found {} "
                    "(use model.arch: deepseek for shared experts)", m.n_shared_experts);
  } else {
    MOE_USAGE_CHECK(m.n_shared_experts >= 1,
                    "model.n_shared_experts: expected >= 1 for model.arch 'deepseek', found {}",
                    m.n_shared_experts);
  }
  check_min<int64_t>("model.shared_expert_ffn_dim", m.shared_expert_ffn_dim, 0);
  check_min<int64_t>("model.dense_layers", m.dense_layers, 0);
  MOE_USAGE_CHECK(m.dense_layers < m.n_layers,
                  "model.dense_layers: expected a value < model.n_layers ({}) so that at least "
                  "one layer is MoE, found {}", m.n_layers, m.dense_layers);
  check_max("model.vocab_size", m.vocab_size, kMaxVocab);
  check_max("model.d_model", m.d_model, kMaxWidth);
  check_max("model.n_layers", m.n_layers, kMaxCount);
  check_max("model.n_heads", m.n_heads, kMaxCount);
  check_max("model.head_dim", m.head_dim, kMaxWidth);
  check_max("model.ffn_dim", m.ffn_dim, kMaxWidth);
  check_max("model.n_experts", m.n_experts, kMaxCount);
  check_max("model.expert_ffn_dim", m.expert_ffn_dim, kMaxWidth);
  check_max("model.n_shared_experts", m.n_shared_experts, kMaxCount);
  check_max("model.shared_expert_ffn_dim", m.shared_expert_ffn_dim, kMaxWidth);
  check_max("model.max_seq_len", m.max_seq_len, kMaxTokens);
  check_positive("model.rope_theta", m.rope_theta);
  check_max("model.rope_theta", m.rope_theta, 1e12);
  check_range("model.norm_eps", m.norm_eps, 0, 1, true);
  MOE_USAGE_CHECK(m.norm_eps > 0, "model.norm_eps: expected a positive number, found {}",
                  m.norm_eps);
  check_positive("model.max_seq_len", m.max_seq_len);
  check_positive("model.init_std", m.init_std);
  check_max("model.init_std", m.init_std, 1e3);
  check_max("model.capacity_factor", m.capacity_factor, kMaxCoef);
  MOE_USAGE_CHECK(m.capacity_factor == 0 || m.capacity_factor >= 1,
                  "model.capacity_factor: expected 0 (dropless) or a value >= 1, found {}",
                  m.capacity_factor);
}

void validate_loss(const LossConfig& l) {
  std::set<std::string> seen;
  for (const auto& name : l.losses) {
    if (name != "lb" && name != "sp" && name != "cp" && name != "z") {
      std::string hint;
      size_t best = 100;
      for (const char* c : {"lb", "sp", "cp", "z"}) {
        size_t d = detail::edit_distance(name, c);
        if (d < best) { best = d; hint = c; }
      }
      MOE_USAGE_FAIL("loss.losses: expected names from lb, sp, cp, z, found '{}' (did you mean "
                     "'{}'?)", name, hint);
    }
    MOE_USAGE_CHECK(seen.insert(name).second, "loss.losses: '{}' is listed twice", name);
  }
  check_range("loss.lb_coef", l.lb_coef, 0, kMaxCoef, false);
  check_range("loss.z_coef", l.z_coef, 0, kMaxCoef, false);
  check_range("loss.sp_coef", l.sp_coef, 0, kMaxCoef, false);
  check_range("loss.cp_coef", l.cp_coef, 0, kMaxCoef, false);
  check_choice("loss.balance", l.balance, {"aux", "bias"});
  // The bias update adds +-bias_gamma per step to the routing biases (in f32): DeepSeek-V3 uses
  // 0.001; above 1 the biases swamp the router's probabilities, and a huge value (1e300) would
  // overflow f32 to inf and the biases to NaN.
  check_range("loss.bias_gamma", l.bias_gamma, 0, 1, false);
}

void validate_data(const DataConfig& d) {
  check_range("data.valid_fraction", d.valid_fraction, 0, 1, true);
  MOE_USAGE_CHECK(!d.jsonl_field.empty(), "data.jsonl_field: expected a field name, found ''");
  // sentencepiece with byte_fallback needs 256 byte pieces and the 3 special ids.
  check_min<int64_t>("data.tokenizer_vocab_size", d.tokenizer_vocab_size, 260);
  check_max("data.tokenizer_vocab_size", d.tokenizer_vocab_size, kMaxVocab);
  check_positive("data.tokenizer_train_bytes", d.tokenizer_train_bytes);
  check_max("data.tokenizer_train_bytes", d.tokenizer_train_bytes, int64_t{1} << 40);
}

void validate_train(const TrainConfig& t, const ModelConfig& m) {
  const std::string& dev = t.device;
  bool cuda_n = dev.rfind("cuda:", 0) == 0 && dev.size() > 5 &&
                dev.find_first_not_of("0123456789", 5) == std::string::npos;
  MOE_USAGE_CHECK(dev == "cpu" || dev == "cuda" || cuda_n,
                  "train.device: expected 'cpu', 'cuda' or 'cuda:N', found '{}'", dev);
  check_choice("train.dtype", t.dtype, {"fp32", "bf16"});
  MOE_USAGE_CHECK(!(t.dtype == "bf16" && dev == "cpu"),
                  "train.dtype: 'bf16' needs a CUDA device; the CPU backend computes in fp32 "
                  "(found train.device 'cpu')");
  check_min<int64_t>("train.seed", t.seed, 0);
  check_positive("train.batch_size", t.batch_size);
  check_max("train.batch_size", t.batch_size, kMaxTokens);
  check_positive("train.seq_len", t.seq_len);
  check_max("train.seq_len", t.seq_len, kMaxTokens);
  MOE_USAGE_CHECK(t.seq_len <= m.max_seq_len,
                  "train.seq_len: expected a value <= model.max_seq_len ({}), found {}",
                  m.max_seq_len, t.seq_len);
  check_positive("train.grad_accum", t.grad_accum);
  check_max("train.grad_accum", t.grad_accum, kMaxTokens);
  check_positive("train.max_steps", t.max_steps);
  check_max("train.max_steps", t.max_steps, kMaxSteps);
  check_positive("train.lr", t.lr);
  check_max("train.lr", t.lr, 1e3);
  check_range("train.min_lr_ratio", t.min_lr_ratio, 0, 1, false);
  check_min<int64_t>("train.warmup_steps", t.warmup_steps, 0);
  check_max("train.warmup_steps", t.warmup_steps, kMaxSteps);
  check_choice("train.schedule", t.schedule, {"cosine", "linear", "constant"});
  check_range("train.weight_decay", t.weight_decay, 0, 1e3, false);
  check_range("train.beta1", t.beta1, 0, 1, true);
  check_range("train.beta2", t.beta2, 0, 1, true);
  check_positive("train.eps", t.eps);
  check_max("train.eps", t.eps, 1.0);
  check_range("train.grad_clip", t.grad_clip, 0, kMaxCoef, false);
  // OpenMP cannot start 100000 threads (it crashed); 1024 is far above any host's cores.
  check_min<int64_t>("train.threads", t.threads, 0);
  check_max("train.threads", t.threads, kMaxThreads);
  // Products the run forms from these keys: the tokens of a micro-batch, and the loader position
  // after max_steps (steps x batch x grad_accum windows).
  checked_mul(t.batch_size, t.seq_len, "train.batch_size x train.seq_len");
  checked_mul(checked_mul(t.max_steps, t.batch_size, "train.max_steps x train.batch_size"),
              t.grad_accum, "train.max_steps x train.batch_size x train.grad_accum");
  MOE_USAGE_CHECK(t.zero == 0 || t.zero == 1, "train.zero: expected 0 (off) or 1 (ZeRO-1: "
                  "optimizer state sharded over the ranks), found {}", t.zero);
  check_positive("train.grad_bucket_mb", t.grad_bucket_mb);
}

void validate_run(const RunConfig& r) {
  MOE_USAGE_CHECK(!r.out_dir.empty(), "run.out_dir: expected a directory, found ''");
  check_positive("run.log_every", r.log_every);
  check_max("run.log_every", r.log_every, kMaxSteps);
  check_min("run.step_timeout_s", r.step_timeout_s, 0.0);
  check_min<int64_t>("run.eval_every", r.eval_every, 0);
  check_max("run.eval_every", r.eval_every, kMaxSteps);
  check_positive("run.eval_batches", r.eval_batches);
  check_max("run.eval_batches", r.eval_batches, kMaxSteps);
  check_min<int64_t>("run.save_every", r.save_every, 0);
  check_max("run.save_every", r.save_every, kMaxSteps);
  check_positive("run.keep_last", r.keep_last);
  check_max("run.keep_last", r.keep_last, kMaxSteps);
}

}  // namespace

void validate(const Config& cfg) {
  validate_model(cfg.model);
  validate_loss(cfg.loss);
  validate_data(cfg.data);
  validate_train(cfg.train, cfg.model);
  validate_run(cfg.run);
}

}  // namespace moe
