// Typed configuration of a run. Defaults live here and only here. config.cpp reads YAML into
// these structs (unknown keys, wrong types and out-of-range values are usage errors naming the
// key and the nearest valid key), applies `--set a.b=value` overrides, validates, and writes the
// resolved config back out as YAML.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct ModelConfig {
  std::string arch = "vanilla";    // "vanilla" (S = 0) or "deepseek" (shared + fine-grained)
  int64_t vocab_size = 0;          // 0: taken from the tokenizer
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 2;          // GQA: n_heads must be a multiple
  int64_t head_dim = 0;            // 0: d_model / n_heads
  int64_t ffn_dim = 512;           // width F of the dense SwiGLU layers (l < dense_layers)
  int64_t n_experts = 8;           // routed experts E
  int64_t top_k = 2;
  int64_t expert_ffn_dim = 256;    // width f of each routed expert
  int64_t n_shared_experts = 0;    // S; must be >= 1 for arch = deepseek, 0 for vanilla
  int64_t shared_expert_ffn_dim = 0;  // fs; 0: expert_ffn_dim
  int64_t dense_layers = 0;        // the first layers use a dense FFN instead of MoE
  bool norm_topk_prob = false;
  bool tie_embeddings = true;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  int64_t max_seq_len = 128;       // context length (RoPE positions, eval windows)
  double init_std = 0.02;
  double capacity_factor = 0.0;    // 0: dropless

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
  int64_t resolved_shared_ffn_dim() const {
    return shared_expert_ffn_dim > 0 ? shared_expert_ffn_dim : expert_ffn_dim;
  }
};

struct LossConfig {
  std::vector<std::string> losses = {"lb"};  // any of lb, sp, cp, z
  double lb_coef = 1e-2;
  double z_coef = 1e-3;
  double sp_coef = 2e-3;
  double cp_coef = 1e-3;
  std::string balance = "aux";     // "aux" (the lb loss alone) or "bias" (aux-loss-free bias)
  double bias_gamma = 1e-3;

  bool has(const std::string& name) const {
    for (const auto& l : losses) if (l == name) return true;
    return false;
  }
};

struct DataConfig {
  std::vector<std::string> train;  // text files, directories, globs or .jsonl files
  std::vector<std::string> valid;  // empty: hold out valid_fraction of the training documents
  double valid_fraction = 0.02;
  std::string jsonl_field = "text";
  std::string tokenizer;           // a sentencepiece .model; empty: train one
  int64_t tokenizer_vocab_size = 4096;
  int64_t tokenizer_train_bytes = 50'000'000;  // corpus bytes sampled to train the tokenizer
  std::string cache_dir;           // token shards; empty: <run.out_dir>/data
  bool shuffle = true;
};

struct TrainConfig {
  std::string device = "cpu";      // "cpu", "cuda", "cuda:N"
  std::string dtype = "fp32";      // "fp32" (CPU) or "bf16" (CUDA mixed precision)
  int64_t seed = 1234;
  int64_t batch_size = 8;          // sequences per micro-batch
  int64_t seq_len = 128;
  int64_t grad_accum = 1;          // micro-batches per optimizer step
  int64_t max_steps = 1000;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;       // final lr = lr * min_lr_ratio
  int64_t warmup_steps = 100;
  std::string schedule = "cosine"; // "cosine", "linear" or "constant" after warmup
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;          // 0: no clipping
  int64_t threads = 0;             // 0: all cores
  bool recompute = false;          // activation recomputation (CUDA, large configs)
  // Multi-process training (docs/distributed.md); each rank runs batch_size x grad_accum
  // sequences per step, so the global batch is world x batch_size x grad_accum.
  int64_t zero = 0;                // 1: ZeRO-1, the AdamW moments sharded over the ranks
  double grad_bucket_mb = 16;      // gradient all-reduce bucket (MiB of f32)
};

struct RunConfig {
  std::string out_dir = "runs/default";
  // Multi-process runs: a rank that makes no progress (no step, validation or checkpoint
  // finished) for this long ends itself, and so the job (a hung peer); 0: never.
  double step_timeout_s = 1800;
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_batches = 16;
  int64_t save_every = 500;
  int64_t keep_last = 3;
};

struct Config {
  ModelConfig model;
  LossConfig loss;
  DataConfig data;
  TrainConfig train;
  RunConfig run;
};

// Reads a YAML file (relative data paths stay relative to the working directory), then applies
// the overrides "a.b=value" in order, then validates. Errors are moe::Error of kind kUsage.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
Config config_from_yaml_string(const std::string& yaml, const std::string& source_name,
                               const std::vector<std::string>& overrides = {});
void apply_override(Config& cfg, const std::string& assignment);  // "train.lr=1e-3"
void validate(const Config& cfg);
std::string config_to_yaml(const Config& cfg);  // resolved, every key, loadable again

}  // namespace moe
