// MoeModel construction (parameters under their Hugging Face names, activation and gradient
// buffers planned once for the largest micro-batch), parameter lookup and counts, and the host
// accessors (loss values, per-token NLL, logits, routing) that download small results.
//
// Routed experts live in one [E, f, d] (down: [E, d, f]) tensor per layer so the grouped GEMM
// sees them contiguously; each expert's Param is a view (Tensor::slice_flat) of its slice, so
// names map 1:1 to Hugging Face tensors and the optimizer updates the shared storage in place.
#include <cstring>
#include <map>

#include "core/checked.h"
#include "io/safetensors.h"
#include "model/model_impl.h"
#include "model/param_count.h"

namespace moe {
namespace {

// Creates the parameters (value, zeroed grad, optional bf16 copy) and records them in order.
// Trainable parameters are carved out of two flat groups (ParamGroup: decayed, then not decayed),
// so the construction code runs twice: a measuring pass (groups == nullptr) that only adds up the
// sizes, then a placing pass over groups allocated to those sizes. The non-trainable balancing
// bias is allocated on its own.
class ParamBuilder {
 public:
  static constexpr int kDecay = 0, kNoDecay = 1;

  // Measuring pass: no memory, no Params.
  ParamBuilder() = default;
  // Placing pass into `groups`, sized by a measuring pass; appends to `params`.
  ParamBuilder(Backend& be, DType master, bool with_lowp, std::vector<ParamGroup>& groups,
               std::vector<Param>& params)
      : be_(&be), master_(master), with_lowp_(with_lowp), groups_(&groups), params_(&params) {}

  int64_t group_numel(int group) const { return used_[group]; }
  bool placing() const { return groups_ != nullptr; }

  Weight add(const std::string& name, const Shape& shape, bool decay = true) {
    return add_param(name, shape, decay, with_lowp_);
  }
  // A parameter the model computes with in the master dtype (the router): no bf16 copy.
  Weight add_master_only(const std::string& name, const Shape& shape) {
    return add_param(name, shape, /*decay=*/true, /*lowp=*/false);
  }
  // A parameter the optimizer never updates (the balancing bias): allocated outside the groups.
  Tensor add_untrained(const std::string& name, const Shape& shape) {
    if (!placing()) return Tensor();
    Param p;
    p.name = name;
    p.value = be_->zeros(shape, master_);
    p.grad = be_->zeros(shape, master_);
    p.decay = false;
    p.trainable = false;
    params_->push_back(p);
    return p.value;
  }

  // n_experts matrices of `shape` stored contiguously as [E, shape...]; one Param per expert,
  // named prefix + e + suffix.
  Weight add_experts(const std::string& prefix, const std::string& suffix, int64_t n_experts,
                     const Shape& shape) {
    Shape big = {n_experts};
    big.insert(big.end(), shape.begin(), shape.end());
    const int64_t offset = used_[kDecay];
    Weight w = carve(kDecay, big, with_lowp_);
    if (!placing()) return w;
    const int64_t each = checked_numel(shape, prefix + "*" + suffix);
    for (int64_t e = 0; e < n_experts; ++e) {
      Param p;
      p.name = prefix + std::to_string(e) + suffix;
      p.value = w.value.slice_flat(e * each, shape);
      p.grad = w.grad.slice_flat(e * each, shape);
      if (w.lowp.defined()) p.lowp = w.lowp.slice_flat(e * each, shape);
      p.group = kDecay;
      p.group_offset = offset + e * each;
      params_->push_back(p);
    }
    return w;
  }

 private:
  Weight add_param(const std::string& name, const Shape& shape, bool decay, bool lowp) {
    const int group = decay ? kDecay : kNoDecay;
    const int64_t offset = used_[group];
    Weight w = carve(group, shape, lowp);
    if (!placing()) return w;
    Param p;
    p.name = name;
    p.value = w.value;
    p.grad = w.grad;
    p.lowp = w.lowp;
    p.decay = decay;
    p.group = group;
    p.group_offset = offset;
    params_->push_back(p);
    return w;
  }

  // The next shape_numel(shape) elements of `group` (views when placing).
  Weight carve(int group, const Shape& shape, bool lowp) {
    // Sizes come from the config: counts are exact or a usage error (see core/checked.h).
    const int64_t n = checked_numel(shape, "model parameter of shape " + shape_str(shape));
    const int64_t offset = used_[group];
    used_[group] = checked_add(used_[group], n, "model parameter count");
    Weight w;
    if (!placing()) return w;
    const ParamGroup& g = (*groups_)[static_cast<size_t>(group)];
    MOE_CHECK(used_[group] <= g.value.numel(), "model: parameter group {} overflows ({} > {} "
              "elements): the measuring and placing passes disagree", group, used_[group],
              g.value.numel());
    w.value = g.value.slice_flat(offset, shape);
    w.grad = g.grad.slice_flat(offset, shape);
    if (lowp && g.lowp.defined()) w.lowp = g.lowp.slice_flat(offset, shape);
    return w;
  }

  Backend* be_ = nullptr;
  DType master_ = DType::kF32;
  bool with_lowp_ = false;
  std::vector<ParamGroup>* groups_ = nullptr;
  std::vector<Param>* params_ = nullptr;
  int64_t used_[2] = {0, 0};
};

void check_model_config(const ModelConfig& c, const LossConfig& lc, int64_t max_batch,
                        int64_t seq, DType dtype) {
  MOE_CHECK(c.vocab_size > 0, "model.vocab_size must be set (> 0) before building the model, "
            "found {}", c.vocab_size);
  MOE_CHECK(c.d_model > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0,
            "model: d_model, n_layers, n_heads, n_kv_heads must be positive");
  MOE_CHECK(c.n_heads % c.n_kv_heads == 0, "model.n_heads ({}) must be a multiple of "
            "model.n_kv_heads ({})", c.n_heads, c.n_kv_heads);
  MOE_CHECK(c.resolved_head_dim() > 0 && c.resolved_head_dim() % 2 == 0,
            "model: head_dim must be positive and even for RoPE, found {}", c.resolved_head_dim());
  MOE_CHECK(c.dense_layers >= 0 && c.dense_layers <= c.n_layers,
            "model.dense_layers must be in [0, n_layers = {}], found {}", c.n_layers,
            c.dense_layers);
  if (c.dense_layers < c.n_layers) {
    MOE_CHECK(c.n_experts >= 1 && c.top_k >= 1 && c.top_k <= c.n_experts,
              "model: need 1 <= top_k ({}) <= n_experts ({})", c.top_k, c.n_experts);
    MOE_CHECK(c.expert_ffn_dim > 0, "model.expert_ffn_dim must be positive");
  }
  if (c.dense_layers > 0) MOE_CHECK(c.ffn_dim > 0, "model.ffn_dim must be positive");
  MOE_CHECK(c.n_shared_experts >= 0, "model.n_shared_experts must be >= 0");
  MOE_CHECK(c.capacity_factor == 0.0, "model.capacity_factor = {}: MoeModel implements "
            "dropless routing only (capacity_factor 0)", c.capacity_factor);
  MOE_CHECK(lc.balance == "aux" || lc.balance == "bias",
            "loss.balance must be \"aux\" or \"bias\", found \"{}\"", lc.balance);
  for (const auto& l : lc.losses) {
    MOE_CHECK(l == "lb" || l == "sp" || l == "cp" || l == "z",
              "loss.losses: unknown loss \"{}\" (known: lb, sp, cp, z)", l);
  }
  MOE_CHECK(max_batch > 0 && seq > 0, "model: micro-batch {} x {} must be positive", max_batch,
            seq);
  MOE_CHECK(dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16,
            "model: compute dtype must be f32, f64 or bf16, found {}", dtype_name(dtype));
}

// Host copy of any floating tensor as doubles (exact for f32/f64/bf16), and as floats.
std::vector<double> download_doubles(Backend& be, const Tensor& t) {
  switch (t.dtype()) {
    case DType::kF32: {
      std::vector<float> f = be.download_vec<float>(t);
      return std::vector<double>(f.begin(), f.end());
    }
    case DType::kF64: return be.download_vec<double>(t);
    case DType::kBF16: {
      std::vector<uint16_t> b(static_cast<size_t>(t.numel()));
      be.download(b.data(), t, b.size() * 2);
      std::vector<double> d(b.size());
      for (size_t i = 0; i < b.size(); ++i) d[i] = bf16_to_f32(b[i]);
      return d;
    }
    case DType::kI32: break;
  }
  MOE_FAIL("download: {} is not a floating dtype", dtype_name(t.dtype()));
}

std::vector<float> download_floats(Backend& be, const Tensor& t) {
  if (t.dtype() == DType::kF32) return be.download_vec<float>(t);
  std::vector<double> d = download_doubles(be, t);
  return std::vector<float>(d.begin(), d.end());
}

double download_sum(Backend& be, const Tensor& t) {
  double s = 0;
  for (double x : download_doubles(be, t)) s += x;
  return s;
}

}  // namespace

MoeModel::MoeModel(const ModelConfig& model, const LossConfig& loss, Backend& backend,
                   int64_t max_batch, int64_t seq, DType compute_dtype)
    : MoeModel(model, loss, backend, max_batch, seq, compute_dtype, /*recompute=*/false) {}

MoeModel::MoeModel(const ModelConfig& model, const LossConfig& loss, Backend& backend,
                   int64_t max_batch, int64_t seq, DType compute_dtype, bool recompute)
    : cfg_(model), loss_cfg_(loss), backend_(backend) {
  check_model_config(cfg_, loss_cfg_, max_batch, seq, compute_dtype);
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.act = compute_dtype;
  m.stat = compute_dtype == DType::kF64 ? DType::kF64 : DType::kF32;
  m.recompute = recompute;
  m.max_batch = max_batch;
  m.max_seq = seq;
  m.cap_tokens = checked_mul(max_batch, seq, "model: micro-batch tokens (batch x seq)");
  m.vocab = cfg_.vocab_size;

  const ModelConfig& c = cfg_;
  const int64_t d = c.d_model, hd = c.resolved_head_dim();
  const int64_t qw = c.n_heads * hd, kvw = c.n_kv_heads * hd;
  const int64_t E = c.n_experts, f = c.expert_ffn_dim;
  const int64_t sw = c.n_shared_experts * c.resolved_shared_ffn_dim();
  const bool bias = loss_cfg_.balance == "bias";
  // The parameters, in Hugging Face order. Run twice (see ParamBuilder): measuring, then placing.
  auto create_params = [&](ModelState& ms, ParamBuilder& pb) {
    ms.embed = pb.add("model.embed_tokens.weight", {ms.vocab, d});
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Layer layer;
      layer.index = l;
      layer.is_moe = l >= c.dense_layers;
      layer.attn_gain = pb.add(p + "input_layernorm.weight", {d}, /*decay=*/false);
      layer.wq = pb.add(p + "self_attn.q_proj.weight", {qw, d});
      layer.wk = pb.add(p + "self_attn.k_proj.weight", {kvw, d});
      layer.wv = pb.add(p + "self_attn.v_proj.weight", {kvw, d});
      layer.wo = pb.add(p + "self_attn.o_proj.weight", {d, qw});
      layer.ffn_gain = pb.add(p + "post_attention_layernorm.weight", {d}, /*decay=*/false);
      if (!layer.is_moe) {
        layer.gate_w = pb.add(p + "mlp.gate_proj.weight", {c.ffn_dim, d});
        layer.up_w = pb.add(p + "mlp.up_proj.weight", {c.ffn_dim, d});
        layer.down_w = pb.add(p + "mlp.down_proj.weight", {d, c.ffn_dim});
      } else {
        layer.moe_index = ms.n_moe_layers++;
        // The router stays in the master dtype (f32): its logits are computed in f32.
        layer.router = pb.add_master_only(p + "mlp.gate.weight", {E, d});
        if (bias) {
          layer.balance_bias = pb.add_untrained(p + "mlp.gate.e_score_correction_bias", {E});
          if (pb.placing()) layer.expert_load = backend_.zeros({E}, ms.stat);
        }
        const std::string ep = p + "mlp.experts.";
        layer.gate_w = pb.add_experts(ep, ".gate_proj.weight", E, {f, d});
        layer.up_w = pb.add_experts(ep, ".up_proj.weight", E, {f, d});
        layer.down_w = pb.add_experts(ep, ".down_proj.weight", E, {d, f});
        if (sw > 0) {
          layer.shared_gate_w = pb.add(p + "mlp.shared_experts.gate_proj.weight", {sw, d});
          layer.shared_up_w = pb.add(p + "mlp.shared_experts.up_proj.weight", {sw, d});
          layer.shared_down_w = pb.add(p + "mlp.shared_experts.down_proj.weight", {d, sw});
        }
      }
      ms.layers.push_back(std::move(layer));
    }
    ms.final_gain = pb.add("model.norm.weight", {d}, /*decay=*/false);
    ms.lm_head = c.tie_embeddings ? ms.embed : pb.add("lm_head.weight", {ms.vocab, d});
  };
  {
    ModelState sizes_only;
    sizes_only.vocab = m.vocab;
    ParamBuilder measure;
    create_params(sizes_only, measure);
    const bool with_lowp = m.act == DType::kBF16;
    for (int group : {ParamBuilder::kDecay, ParamBuilder::kNoDecay}) {
      ParamGroup g;
      const int64_t n = measure.group_numel(group);
      g.value = backend_.zeros({n}, m.stat);
      g.grad = backend_.zeros({n}, m.stat);
      if (with_lowp) g.lowp = backend_.zeros({n}, DType::kBF16);
      g.decay = group == ParamBuilder::kDecay;
      groups_.push_back(g);
    }
    ParamBuilder pb(backend_, m.stat, with_lowp, groups_, params_);
    create_params(m, pb);
  }

  plan_buffers(m, cfg_, backend_);
}

MoeModel::~MoeModel() = default;

Param& MoeModel::param(const std::string& name) {
  for (Param& p : params_) {
    if (p.name == name) return p;
  }
  MOE_FAIL("model has no parameter named \"{}\" ({} parameters; arch {}, {} layers)", name,
           params_.size(), cfg_.arch, cfg_.n_layers);
}

int64_t MoeModel::n_params_total() const { return params_total(cfg_, cfg_.vocab_size); }
int64_t MoeModel::n_params_active() const { return params_active(cfg_, cfg_.vocab_size); }
double MoeModel::flops_per_token() const {
  return moe::flops_per_token(cfg_, cfg_.vocab_size, impl_->max_seq);
}

int64_t MoeModel::activation_bytes() const { return impl_->activation_bytes; }

void MoeModel::zero_grad() {
  for (ParamGroup& g : groups_) backend_.fill(g.grad, 0.0);
  for (Param& p : params_) {
    if (p.group < 0) backend_.fill(p.grad, 0.0);
  }
}

void MoeModel::sync_lowp() {
  for (ParamGroup& g : groups_) {
    if (g.lowp.defined()) backend_.convert(g.lowp, g.value);
  }
}

DType MoeModel::compute_dtype() const { return impl_->act; }

LossValues MoeModel::loss_values() {
  Impl& m = *impl_;
  MOE_CHECK(m.have_forward, "loss_values() called before forward()");
  LossValues v;
  v.n_tokens = m.n_valid;
  // Summed in double in token order on the host: the same value whatever the thread count.
  const double nll_sum = download_sum(backend_, head_rows(m.token_nll, m.n_tokens));
  v.lm = m.n_valid > 0 ? nll_sum / static_cast<double>(m.n_valid) : 0.0;
  if (m.n_moe_layers > 0) {
    v.lb = download_sum(backend_, m.lb_values);
    v.z = download_sum(backend_, m.z_values);
    v.sp = download_sum(backend_, m.sp_values);
    v.cp = download_sum(backend_, m.cp_value);
  }
  const LossConfig& lc = loss_cfg_;
  v.total = v.lm + (lc.has("lb") ? lc.lb_coef * v.lb : 0.0) + (lc.has("z") ? lc.z_coef * v.z : 0.0) +
            (lc.has("sp") ? lc.sp_coef * v.sp : 0.0) + (lc.has("cp") ? lc.cp_coef * v.cp : 0.0);
  return v;
}

std::vector<float> MoeModel::token_nll() {
  Impl& m = *impl_;
  MOE_CHECK(m.have_forward, "token_nll() called before forward()");
  return download_floats(backend_, head_rows(m.token_nll, m.n_tokens));
}

std::vector<float> MoeModel::logits_host() {
  Impl& m = *impl_;
  MOE_CHECK(m.have_forward, "logits_host() called before forward()");
  return download_floats(backend_, head_rows(m.logits, m.n_tokens));
}

std::vector<LayerRouting> MoeModel::routing() {
  Impl& m = *impl_;
  MOE_CHECK(m.have_forward, "routing() called before forward()");
  std::vector<LayerRouting> out;
  if (m.n_moe_layers == 0) return out;
  std::vector<double> sp = download_doubles(backend_, m.sp_values);
  for (Layer& layer : m.layers) {
    if (!layer.is_moe) continue;
    LayerRouting r;
    r.layer = layer.index;
    r.n_tokens = m.n_tokens;
    r.n_experts = cfg_.n_experts;
    r.top_k = cfg_.top_k;
    r.probs = download_floats(backend_, head_rows(layer.act.probs, m.n_tokens));
    r.topk_idx = backend_.download_vec<int32_t>(head_rows(layer.act.topk_idx, m.n_tokens));
    r.sp_value = sp[static_cast<size_t>(layer.moe_index)];
    out.push_back(std::move(r));
  }
  return out;
}

void MoeModel::update_balance_bias(float gamma) {
  MOE_CHECK(loss_cfg_.balance == "bias", "update_balance_bias() needs loss.balance = bias, "
            "found \"{}\"", loss_cfg_.balance);
  for (Layer& layer : impl_->layers) {
    if (!layer.is_moe) continue;
    backend_.balance_bias_update(layer.balance_bias, layer.expert_load, gamma);
    backend_.fill(layer.expert_load, 0.0);
  }
}

std::vector<Tensor> MoeModel::balance_loads() {
  std::vector<Tensor> out;
  for (Layer& layer : impl_->layers) {
    if (layer.is_moe && layer.expert_load.defined()) out.push_back(layer.expert_load);
  }
  return out;
}

void MoeModel::set_backward_hook(std::function<void(int64_t)> hook) {
  backward_hook_ = std::move(hook);
}

int64_t MoeModel::backward_part(const Param& p) const {
  static const std::string layers = "model.layers.";
  if (p.name.rfind(layers, 0) == 0) return std::stoll(p.name.substr(layers.size()));
  // The embedding (also the tied head) is finished last; the final norm and an untied head first.
  if (p.name.rfind("model.embed_tokens.", 0) == 0) return -1;
  return cfg_.n_layers;
}

}  // namespace moe
