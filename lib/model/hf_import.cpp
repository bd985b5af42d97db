// read_hf_checkpoint / apply_hf_config / load_hf_weights: see hf_import.h.
#include "model/hf_import.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace moe {
namespace {

json read_json(const std::string& path) {
  std::ifstream in(path);
  MOE_USAGE_CHECK(in.good(), "{}: cannot open", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    MOE_USAGE_FAIL("{}: not valid JSON: {}", path, e.what());
  }
}

// A required integer / number / bool key of config.json.
int64_t get_int(const json& c, const std::string& path, const char* key) {
  MOE_USAGE_CHECK(c.contains(key) && c[key].is_number_integer(),
                  "{}: key \"{}\": expected an integer, found {}", path, key,
                  c.contains(key) ? c[key].dump() : "nothing");
  return c[key].get<int64_t>();
}
double get_num(const json& c, const std::string& path, const char* key, double fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  MOE_USAGE_CHECK(c[key].is_number(), "{}: key \"{}\": expected a number, found {}", path, key,
                  c[key].dump());
  return c[key].get<double>();
}
bool get_bool(const json& c, const std::string& path, const char* key, bool fallback) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  MOE_USAGE_CHECK(c[key].is_boolean(), "{}: key \"{}\": expected true or false, found {}", path,
                  key, c[key].dump());
  return c[key].get<bool>();
}

// The safetensors files of the checkpoint: model.safetensors, or the shards of the index.
std::vector<std::string> weight_files(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return {single.string()};
  MOE_USAGE_CHECK(fs::exists(index), "{}: no model.safetensors and no "
                  "model.safetensors.index.json (only safetensors checkpoints are read)", dir);
  const json j = read_json(index.string());
  MOE_USAGE_CHECK(j.contains("weight_map") && j["weight_map"].is_object(),
                  "{}: no \"weight_map\" object", index.string());
  std::set<std::string> files;
  for (const auto& kv : j["weight_map"].items()) {
    MOE_USAGE_CHECK(kv.value().is_string(), "{}: weight_map[\"{}\"]: expected a file name",
                    index.string(), kv.key());
    files.insert(kv.value().get<std::string>());
  }
  std::vector<std::string> out;
  for (const auto& f : files) {
    const fs::path p = fs::path(dir) / f;
    MOE_USAGE_CHECK(fs::exists(p), "{}: shard {} listed in {} is missing", dir, f,
                    index.filename().string());
    out.push_back(p.string());
  }
  return out;
}

// Matches "<prefix><digits><sep><rest>" (one or more decimal digits): the tensor names of
// transformers' layered models. Plain string scanning rather than std::regex: the names are
// fixed-form, and GCC's <regex> trips -Wmaybe-uninitialized in the sanitizer build.
bool digits_between(const std::string& s, const std::string& prefix, const std::string& sep,
                    std::string& digits, std::string* rest) {
  if (s.compare(0, prefix.size(), prefix) != 0) return false;
  size_t end = prefix.size();
  while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
  if (end == prefix.size() || s.compare(end, sep.size(), sep) != 0) return false;
  digits = s.substr(prefix.size(), end - prefix.size());
  *rest = s.substr(end + sep.size());
  return true;
}

// "mlp.shared_expert.{gate,up,down}_proj.weight" -> "gate", "up" or "down"; "" otherwise.
std::string qwen_shared_projection(const std::string& rest) {
  for (const char* proj : {"gate", "up", "down"}) {
    if (rest == std::string("mlp.shared_expert.") + proj + "_proj.weight") return proj;
  }
  return "";
}

bool all_zero(const HfTensor& t) {
  for (float v : t.values) {
    if (v != 0.0f) return false;
  }
  return true;
}

HfImport read_hf_checkpoint_unchecked(const std::string& dir);

}  // namespace

HfImport read_hf_checkpoint(const std::string& dir) {
  try {
    return read_hf_checkpoint_unchecked(dir);
  } catch (const json::exception& e) {  // a key of config.json with the wrong JSON type
    MOE_USAGE_FAIL("{}/config.json or its index: unexpected value: {}", dir, e.what());
  }
}

namespace {

HfImport read_hf_checkpoint_unchecked(const std::string& dir) {
  MOE_USAGE_CHECK(fs::is_directory(dir), "--init-from {}: no such directory", dir);
  HfImport hf;
  hf.dir = dir;
  const std::string cpath = (fs::path(dir) / "config.json").string();
  MOE_USAGE_CHECK(fs::exists(cpath), "{}: missing config.json (not a transformers checkpoint)",
                  dir);
  const json c = read_json(cpath);
  MOE_USAGE_CHECK(c.contains("model_type") && c["model_type"].is_string(),
                  "{}: no \"model_type\"", cpath);
  const std::string type = c["model_type"].get<std::string>();
  if (type == "deepseek_v2" || type == "deepseek_v3") {
    MOE_USAGE_FAIL("{}: model_type {} uses multi-head latent attention (MLA), which moe-spec's "
                   "model does not have (supported: qwen2_moe, mixtral)", cpath, type);
  }
  if (type == "qwen3_moe" || type == "olmoe") {
    MOE_USAGE_FAIL("{}: model_type {} normalises queries and keys (QK-norm), which moe-spec's "
                   "model does not have (supported: qwen2_moe, mixtral)", cpath, type);
  }
  MOE_USAGE_CHECK(type == "qwen2_moe" || type == "mixtral", "{}: model_type \"{}\" is not "
                  "supported (supported: qwen2_moe, mixtral)", cpath, type);
  hf.model_type = type;

  ModelConfig& m = hf.model;
  m.vocab_size = get_int(c, cpath, "vocab_size");
  m.d_model = get_int(c, cpath, "hidden_size");
  m.n_layers = get_int(c, cpath, "num_hidden_layers");
  m.n_heads = get_int(c, cpath, "num_attention_heads");
  m.n_kv_heads = c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null()
                     ? get_int(c, cpath, "num_key_value_heads") : m.n_heads;
  MOE_USAGE_CHECK(m.n_heads > 0 && m.d_model % m.n_heads == 0, "{}: hidden_size {} is not a "
                  "multiple of num_attention_heads {}", cpath, m.d_model, m.n_heads);
  if (c.contains("head_dim") && !c["head_dim"].is_null()) {
    MOE_USAGE_CHECK(get_int(c, cpath, "head_dim") == m.d_model / m.n_heads, "{}: head_dim {} != "
                    "hidden_size / num_attention_heads = {}", cpath, c["head_dim"].dump(),
                    m.d_model / m.n_heads);
  }
  m.head_dim = 0;
  const std::string act = c.value("hidden_act", std::string("silu"));
  MOE_USAGE_CHECK(act == "silu", "{}: hidden_act \"{}\": moe-spec's FFNs are SwiGLU (silu)",
                  cpath, act);
  MOE_USAGE_CHECK(!c.contains("rope_scaling") || c["rope_scaling"].is_null(), "{}: rope_scaling "
                  "{}: moe-spec uses plain RoPE", cpath, c.contains("rope_scaling") ?
                  c["rope_scaling"].dump() : "");
  m.rope_theta = get_num(c, cpath, "rope_theta", 10000.0);
  m.norm_eps = get_num(c, cpath, "rms_norm_eps", 1e-6);
  m.tie_embeddings = get_bool(c, cpath, "tie_word_embeddings", false);
  m.top_k = get_int(c, cpath, "num_experts_per_tok");
  m.capacity_factor = 0;
  hf.max_position_embeddings = c.value("max_position_embeddings", int64_t{0});
  if (type == "mixtral") {
    m.n_experts = get_int(c, cpath, "num_local_experts");
    m.expert_ffn_dim = get_int(c, cpath, "intermediate_size");
    m.norm_topk_prob = true;
    m.arch = "vanilla";
    m.n_shared_experts = 0;
    m.dense_layers = 0;
    if (c.contains("sliding_window") && !c["sliding_window"].is_null()) {
      hf.sliding_window = get_int(c, cpath, "sliding_window");
    }
  } else {
    MOE_USAGE_CHECK(!get_bool(c, cpath, "use_sliding_window", false), "{}: use_sliding_window is "
                    "true: moe-spec's attention has no sliding window", cpath);
    m.n_experts = get_int(c, cpath, "num_experts");
    m.expert_ffn_dim = get_int(c, cpath, "moe_intermediate_size");
    m.ffn_dim = get_int(c, cpath, "intermediate_size");
    m.norm_topk_prob = get_bool(c, cpath, "norm_topk_prob", false);
    const int64_t step = c.value("decoder_sparse_step", int64_t{1});
    std::vector<int64_t> dense;
    if (c.contains("mlp_only_layers") && c["mlp_only_layers"].is_array()) {
      dense = c["mlp_only_layers"].get<std::vector<int64_t>>();
    }
    for (size_t i = 0; i < dense.size(); ++i) {
      MOE_USAGE_CHECK(dense[i] == static_cast<int64_t>(i), "{}: mlp_only_layers {}: moe-spec's "
                      "dense layers are the first ones (0, 1, ...)", cpath,
                      c["mlp_only_layers"].dump());
    }
    MOE_USAGE_CHECK(step == 1, "{}: decoder_sparse_step {}: moe-spec's MoE layers are every layer after the "
                    "dense ones (decoder_sparse_step 1)", cpath, step);
    m.dense_layers = static_cast<int64_t>(dense.size());
  }
  MOE_USAGE_CHECK(m.n_experts > 0 && m.top_k > 0 && m.top_k <= m.n_experts,
                  "{}: {} experts, {} per token: expected 1 <= num_experts_per_tok <= experts",
                  cpath, m.n_experts, m.top_k);

  // Tensors, renamed to moe-spec's names.
  std::map<std::string, HfTensor> raw;
  for (const std::string& file : weight_files(dir)) {
    SafeTensorsReader reader(file);
    for (const std::string& name : reader.names()) {
      const StDType dt = reader.info(name).dtype;
      MOE_USAGE_CHECK(dt == StDType::kF32 || dt == StDType::kF64 || dt == StDType::kBF16 ||
                          dt == StDType::kF16, "{}: tensor \"{}\" has dtype {}, expected a "
                      "floating-point dtype", file, name, st_dtype_name(dt));
      MOE_USAGE_CHECK(!raw.count(name), "{}: tensor \"{}\" appears in two shards", dir, name);
      raw[name] = HfTensor{reader.shape(name), reader.to_f32(name)};
    }
  }
  std::map<int64_t, HfTensor*> shared_gate;
  std::map<int64_t, std::map<std::string, HfTensor*>> shared;
  for (auto& [name, t] : raw) {
    std::string layer_digits, rest;
    if (!digits_between(name, "model.layers.", ".", layer_digits, &rest)) {
      hf.tensors[name] = std::move(t);
      continue;
    }
    const int64_t layer = std::stoll(layer_digits);
    const std::string prefix = "model.layers." + layer_digits + ".";
    MOE_USAGE_CHECK(layer < m.n_layers, "{}: tensor \"{}\" of layer {}, but num_hidden_layers is "
                    "{}", dir, name, layer, m.n_layers);
    if (rest.rfind("self_attn.q_norm", 0) == 0 || rest.rfind("self_attn.k_norm", 0) == 0) {
      MOE_USAGE_FAIL("{}: tensor \"{}\": QK-norm, which moe-spec's model does not have", dir,
                     name);
    }
    if (rest.size() > 5 && rest.compare(rest.size() - 5, 5, ".bias") == 0 &&
        rest.rfind("self_attn.", 0) == 0) {
      MOE_USAGE_CHECK(all_zero(t), "{}: tensor \"{}\" is a non-zero attention bias, which "
                      "moe-spec's model does not have", dir, name);
      continue;  // zero biases: exactly no bias
    }
    std::string expert_digits, w_rest;
    const std::string shared_proj = qwen_shared_projection(rest);
    if (type == "mixtral" &&
        digits_between(rest, "block_sparse_moe.experts.", ".w", expert_digits, &w_rest) &&
        (w_rest == "1.weight" || w_rest == "2.weight" || w_rest == "3.weight")) {
      static const char* proj[] = {"", "gate_proj", "down_proj", "up_proj"};
      hf.tensors[prefix + "mlp.experts." + expert_digits + "." + proj[w_rest[0] - '0'] +
                 ".weight"] = std::move(t);
    } else if (type == "mixtral" && rest == "block_sparse_moe.gate.weight") {
      hf.tensors[prefix + "mlp.gate.weight"] = std::move(t);
    } else if (type == "qwen2_moe" && !shared_proj.empty()) {
      shared[layer][shared_proj] = &t;
    } else if (type == "qwen2_moe" && rest == "mlp.shared_expert_gate.weight") {
      shared_gate[layer] = &t;
    } else {
      hf.tensors[name] = std::move(t);
    }
  }
  // qwen2_moe shared experts: all zero everywhere -> none; otherwise ungated (zero gate) in
  // every MoE layer -> one DeepSeekMoE shared expert of the same width, down_proj halved.
  if (type == "qwen2_moe") {
    bool any_nonzero = false, any_zero = false;
    int64_t width = -1;
    for (int64_t l = m.dense_layers; l < m.n_layers; ++l) {
      auto& s = shared[l];
      MOE_USAGE_CHECK(s.count("gate") && s.count("up") && s.count("down") && shared_gate.count(l),
                      "{}: layer {} lacks mlp.shared_expert.{{gate,up,down}}_proj.weight or "
                      "mlp.shared_expert_gate.weight", dir, l);
      const bool zero = all_zero(*s["down"]) || (all_zero(*s["gate"]) && all_zero(*s["up"]));
      (zero ? any_zero : any_nonzero) = true;
      if (!zero) {
        MOE_USAGE_CHECK(all_zero(*shared_gate[l]), "{}: layer {}: mlp.shared_expert_gate.weight "
                        "is non-zero: a gated shared expert, which moe-spec's model does not have "
                        "(its shared experts are ungated)", dir, l);
        width = s["gate"]->shape.at(0);
      }
    }
    MOE_USAGE_CHECK(!(any_zero && any_nonzero), "{}: some MoE layers have a zero shared expert "
                    "and others not: moe-spec's layers are all alike", dir);
    if (any_nonzero) {
      m.arch = "deepseek";
      m.n_shared_experts = 1;
      m.shared_expert_ffn_dim = width;
      for (int64_t l = m.dense_layers; l < m.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".mlp.shared_experts.";
        HfTensor& down = *shared[l]["down"];
        for (float& v : down.values) v *= 0.5f;  // sigmoid(0) = 0.5 folded in: exact
        hf.tensors[p + "gate_proj.weight"] = std::move(*shared[l]["gate"]);
        hf.tensors[p + "up_proj.weight"] = std::move(*shared[l]["up"]);
        hf.tensors[p + "down_proj.weight"] = std::move(down);
      }
    } else {
      m.arch = "vanilla";
      m.n_shared_experts = 0;
      m.shared_expert_ffn_dim = 0;
    }
  }
  if (m.tie_embeddings) hf.tensors.erase("lm_head.weight");  // a copy of the embeddings
  const fs::path sp = fs::path(dir) / "tokenizer.model";
  if (fs::exists(sp)) hf.tokenizer_model = sp.string();
  return hf;
}

}  // namespace

void apply_hf_config(const HfImport& hf, ModelConfig& model) {
  const ModelConfig& m = hf.model;
  if (hf.sliding_window > 0) {
    MOE_USAGE_CHECK(hf.sliding_window >= model.max_seq_len, "{}/config.json: sliding_window {} "
                    "< model.max_seq_len {}: moe-spec's attention has no sliding window (set "
                    "model.max_seq_len <= {} to train with windows that never apply)", hf.dir,
                    hf.sliding_window, model.max_seq_len, hf.sliding_window);
  }
  model.arch = m.arch;
  model.vocab_size = m.vocab_size;
  model.d_model = m.d_model;
  model.n_layers = m.n_layers;
  model.n_heads = m.n_heads;
  model.n_kv_heads = m.n_kv_heads;
  model.head_dim = m.head_dim;
  if (hf.model_type == "qwen2_moe") model.ffn_dim = m.ffn_dim;
  model.n_experts = m.n_experts;
  model.top_k = m.top_k;
  model.expert_ffn_dim = m.expert_ffn_dim;
  model.n_shared_experts = m.n_shared_experts;
  model.shared_expert_ffn_dim = m.shared_expert_ffn_dim;
  model.dense_layers = m.dense_layers;
  model.norm_topk_prob = m.norm_topk_prob;
  model.tie_embeddings = m.tie_embeddings;
  model.rope_theta = m.rope_theta;
  model.norm_eps = m.norm_eps;
  model.capacity_factor = 0;
}

void load_hf_weights(MoeModel& model, const HfImport& hf) {
  std::set<std::string> used;
  for (Param& p : model.params()) {
    auto it = hf.tensors.find(p.name);
    if (it == hf.tensors.end() && !p.trainable) continue;  // balancing bias: stays zero
    MOE_USAGE_CHECK(it != hf.tensors.end(), "{}: no tensor for \"{}\" (expected shape {}): the "
                    "config and the tensors disagree", hf.dir, p.name, shape_str(p.value.shape()));
    MOE_USAGE_CHECK(it->second.shape == p.value.shape(), "{}: tensor for \"{}\" has shape {}, "
                    "but config.json implies {}", hf.dir, p.name, shape_str(it->second.shape),
                    shape_str(p.value.shape()));
    used.insert(p.name);
  }
  for (const auto& kv : hf.tensors) {
    if (model.is_other_shard_expert(kv.first)) continue;  // expert parallelism: another rank's
    MOE_USAGE_CHECK(used.count(kv.first), "{}: tensor \"{}\" (shape {}) has no place in the "
                    "model config.json describes", hf.dir, kv.first, shape_str(kv.second.shape));
  }
  for (Param& p : model.params()) {
    auto it = hf.tensors.find(p.name);
    if (it == hf.tensors.end()) continue;
    MOE_CHECK(p.value.dtype() == DType::kF32, "load_hf_weights: master weights must be f32");
    model.backend().upload(p.value, it->second.values.data(), it->second.values.size() * 4);
  }
  model.sync_lowp();
}

}  // namespace moe
