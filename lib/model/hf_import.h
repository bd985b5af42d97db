// Import of a Hugging Face transformers checkpoint (moetrain --init-from HF_DIR): a directory
// with config.json and model.safetensors (or shards listed in model.safetensors.index.json) of
// a class whose every feature moe-spec's model has, mapped exactly (docs/hf.md):
//   * mixtral: block_sparse_moe.{gate, experts.e.w1/w3/w2} -> mlp.{gate, experts.e.gate/up/down};
//     normalised top-k gates.
//   * qwen2_moe (and moe-spec's own exports): the attention biases must be zero; a shared expert
//     whose weights are all zero is no shared expert (arch vanilla); otherwise its
//     shared_expert_gate must be zero (a constant 0.5 gate) and it becomes one ungated shared
//     expert of the same width with down_proj halved (arch deepseek), exact in floating point;
//     dense first layers come from mlp_only_layers.
// A feature the model lacks is a usage error naming it (exit code 2): a non-zero shared-expert
// gate, attention biases, QK-norm, sliding windows, MLA, an unsupported class, a config that
// disagrees with the tensors, a missing file or tensor.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"
#include "model/model.h"

namespace moe {

struct HfTensor {
  Shape shape;
  std::vector<float> values;
};

struct HfImport {
  std::string dir;
  std::string model_type;            // "qwen2_moe" or "mixtral"
  ModelConfig model;                 // the architecture keys, mapped (see apply_hf_config)
  int64_t max_position_embeddings = 0;
  int64_t sliding_window = 0;        // mixtral: 0 when null
  std::string tokenizer_model;       // HF_DIR/tokenizer.model when present (moe-spec exports)
  std::map<std::string, HfTensor> tensors;  // moe-spec names, f32
};

HfImport read_hf_checkpoint(const std::string& dir);

// Overwrites the architecture keys of `model` with the checkpoint's (vocab_size, sizes, experts,
// shared experts, dense layers, norm_topk_prob, tie_embeddings, rope_theta, norm_eps); keeps the
// run's max_seq_len, init_std and capacity_factor. A Mixtral sliding window shorter than
// max_seq_len is an error (it would change attention); a longer one never applies.
void apply_hf_config(const HfImport& hf, ModelConfig& model);

// Copies the imported tensors into the model's parameters: every parameter must be there with
// its shape (the aux-loss-free balancing bias, which no HF class has, keeps its zero init).
void load_hf_weights(MoeModel& model, const HfImport& hf);

}  // namespace moe
