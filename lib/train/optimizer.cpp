// AdamW with global-norm clipping over Backend::adamw_step / global_norm_sq (see optimizer.h).
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "io/safetensors.h"

namespace moe {

AdamW::AdamW(Backend& backend, std::vector<Param>& params, const TrainConfig& cfg,
             const std::vector<ParamGroup>& groups)
    : backend_(backend), cfg_(cfg) {
  for (const ParamGroup& g : groups) {
    groups_.push_back({g, backend_.zeros(g.value.shape(), DType::kF32),
                       backend_.zeros(g.value.shape(), DType::kF32)});
  }
  for (auto& p : params) {
    if (!p.trainable) continue;
    MOE_CHECK(p.value.dtype() == DType::kF32, "AdamW: parameter '{}' is {}, expected f32 master "
              "weights", p.name, dtype_name(p.value.dtype()));
    if (p.group >= 0 && p.group < static_cast<int64_t>(groups_.size())) {
      GroupState& g = groups_[static_cast<size_t>(p.group)];
      MOE_CHECK(p.decay == g.group.decay, "AdamW: parameter '{}' has decay {} in a group with "
                "decay {}", p.name, p.decay, g.group.decay);
      states_.push_back({&p, g.m.slice_flat(p.group_offset, p.value.shape()),
                         g.v.slice_flat(p.group_offset, p.value.shape())});
    } else {
      states_.push_back({&p, backend_.zeros(p.value.shape(), DType::kF32),
                         backend_.zeros(p.value.shape(), DType::kF32)});
    }
  }
  for (auto& s : states_) {
    if (s.param->group < 0 || s.param->group >= static_cast<int64_t>(groups_.size())) {
      ungrouped_.push_back(&s);
    }
  }
  norm_sq_ = backend_.zeros({1}, DType::kF32);
}

double AdamW::grad_norm() {
  backend_.fill(norm_sq_, 0.0);
  for (auto& g : groups_) backend_.global_norm_sq(norm_sq_, g.group.grad);
  for (State* s : ungrouped_) backend_.global_norm_sq(norm_sq_, s->param->grad);
  float sq = 0;
  backend_.download(&sq, norm_sq_, sizeof(float));
  return std::sqrt(static_cast<double>(sq));
}

float AdamW::clip_scale(double grad_norm, double grad_clip) {
  if (grad_clip <= 0) return 1.0f;
  return static_cast<float>(std::min(1.0, grad_clip / (grad_norm + 1e-6)));
}

void AdamW::step(int64_t step, double lr, float grad_scale) {
  AdamWParams hp;
  hp.lr = static_cast<float>(lr);
  hp.beta1 = static_cast<float>(cfg_.beta1);
  hp.beta2 = static_cast<float>(cfg_.beta2);
  hp.eps = static_cast<float>(cfg_.eps);
  hp.step = step;
  hp.grad_scale = grad_scale;
  for (auto& g : groups_) {
    hp.weight_decay = g.group.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    backend_.adamw_step(g.group.value, g.m, g.v, g.group.lowp, g.group.grad, hp);
  }
  for (State* s : ungrouped_) {
    hp.weight_decay = s->param->decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    backend_.adamw_step(s->param->value, s->m, s->v, s->param->lowp, s->param->grad, hp);
  }
}

void AdamW::save(SafeTensorsWriter& out) {
  for (auto& s : states_) {
    out.add_f32("exp_avg." + s.param->name, s.m.shape(), backend_.download_vec<float>(s.m));
    out.add_f32("exp_avg_sq." + s.param->name, s.v.shape(), backend_.download_vec<float>(s.v));
  }
}

void AdamW::load(const SafeTensorsReader& in) {
  for (auto& s : states_) {
    for (auto [prefix, tensor] : {std::pair<const char*, Tensor*>{"exp_avg.", &s.m},
                                  {"exp_avg_sq.", &s.v}}) {
      const std::string name = prefix + s.param->name;
      MOE_CHECK(in.has(name), "{}: optimizer state '{}' is missing", in.path(), name);
      MOE_CHECK(in.shape(name) == tensor->shape(), "{}: optimizer state '{}' has shape {}, the "
                "model expects {}", in.path(), name, shape_str(in.shape(name)),
                shape_str(tensor->shape()));
      backend_.upload_vec(*tensor, in.to_f32(name));
    }
  }
}

}  // namespace moe
