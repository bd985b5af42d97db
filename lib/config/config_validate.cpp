// validate(): the range and consistency checks of a Config (every message names the key, the
// expected range and the value found; all are usage errors, exit code 2).
#include <set>
#include <string>

#include "config/config.h"
#include "config/config_internal.h"
#include "core/error.h"

namespace moe {
namespace {

// ---- range checks --------------------------------------------------------------------------

template <typename T>
void check_min(const char* key, T value, T lo) {
  MOE_USAGE_CHECK(value >= lo, "{}: expected a value >= {}, found {}", key, lo, value);
}
void check_positive(const char* key, int64_t value) {
  MOE_USAGE_CHECK(value > 0, "{}: expected a positive integer, found {}", key, value);
}
void check_positive(const char* key, double value) {
  MOE_USAGE_CHECK(value > 0, "{}: expected a positive number, found {}", key, value);
}
// [lo, hi) when open_hi, else [lo, hi]
void check_range(const char* key, double value, double lo, double hi, bool open_hi) {
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
  check_positive("model.rope_theta", m.rope_theta);
  check_range("model.norm_eps", m.norm_eps, 0, 1, true);
  MOE_USAGE_CHECK(m.norm_eps > 0, "model.norm_eps: expected a positive number, found {}",
                  m.norm_eps);
  check_positive("model.max_seq_len", m.max_seq_len);
  check_positive("model.init_std", m.init_std);
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
  check_min("loss.lb_coef", l.lb_coef, 0.0);
  check_min("loss.z_coef", l.z_coef, 0.0);
  check_min("loss.sp_coef", l.sp_coef, 0.0);
  check_min("loss.cp_coef", l.cp_coef, 0.0);
  check_choice("loss.balance", l.balance, {"aux", "bias"});
  check_min("loss.bias_gamma", l.bias_gamma, 0.0);
}

void validate_data(const DataConfig& d) {
  check_range("data.valid_fraction", d.valid_fraction, 0, 1, true);
  MOE_USAGE_CHECK(!d.jsonl_field.empty(), "data.jsonl_field: expected a field name, found ''");
  // sentencepiece with byte_fallback needs 256 byte pieces and the 3 special ids.
  check_min<int64_t>("data.tokenizer_vocab_size", d.tokenizer_vocab_size, 260);
  check_positive("data.tokenizer_train_bytes", d.tokenizer_train_bytes);
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
  check_positive("train.seq_len", t.seq_len);
  MOE_USAGE_CHECK(t.seq_len <= m.max_seq_len,
                  "train.seq_len: expected a value <= model.max_seq_len ({}), found {}",
                  m.max_seq_len, t.seq_len);
  check_positive("train.grad_accum", t.grad_accum);
  check_positive("train.max_steps", t.max_steps);
  check_positive("train.lr", t.lr);
  check_range("train.min_lr_ratio", t.min_lr_ratio, 0, 1, false);
  check_min<int64_t>("train.warmup_steps", t.warmup_steps, 0);
  check_choice("train.schedule", t.schedule, {"cosine", "linear", "constant"});
  check_min("train.weight_decay", t.weight_decay, 0.0);
  check_range("train.beta1", t.beta1, 0, 1, true);
  check_range("train.beta2", t.beta2, 0, 1, true);
  check_positive("train.eps", t.eps);
  check_min("train.grad_clip", t.grad_clip, 0.0);
  check_min<int64_t>("train.threads", t.threads, 0);
  MOE_USAGE_CHECK(t.zero == 0 || t.zero == 1, "train.zero: expected 0 (off) or 1 (ZeRO-1: "
                  "optimizer state sharded over the ranks), found {}", t.zero);
  check_positive("train.grad_bucket_mb", t.grad_bucket_mb);
  check_positive("train.expert_parallel", t.expert_parallel);
}

void validate_run(const RunConfig& r) {
  MOE_USAGE_CHECK(!r.out_dir.empty(), "run.out_dir: expected a directory, found ''");
  check_positive("run.log_every", r.log_every);
  check_min("run.step_timeout_s", r.step_timeout_s, 0.0);
  check_min<int64_t>("run.eval_every", r.eval_every, 0);
  check_positive("run.eval_batches", r.eval_batches);
  check_min<int64_t>("run.save_every", r.save_every, 0);
  check_positive("run.keep_last", r.keep_last);
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
