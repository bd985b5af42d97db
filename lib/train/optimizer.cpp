// AdamW with global-norm clipping over Backend::adamw_step / global_norm_sq (see optimizer.h).
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "io/safetensors.h"

namespace moe {

AdamW::AdamW(Backend& backend, std::vector<Param>& params, const TrainConfig& cfg,
             const std::vector<ParamGroup>& groups, Communicator* zero)
    : backend_(backend), cfg_(cfg), zero_(zero) {
  if (zero_ != nullptr && zero_->size() <= 1) zero_ = nullptr;  // one rank: nothing to split
  int64_t max_shard = 0;
  for (const ParamGroup& g : groups) {
    if (zero_ == nullptr) {
      GroupState gs;
      gs.group = g;
      gs.m = backend_.zeros(g.value.shape(), DType::kF32);
      gs.v = backend_.zeros(g.value.shape(), DType::kF32);
      groups_.push_back(std::move(gs));
      continue;
    }
    GroupState gs;
    gs.group = g;
    const int64_t n = g.value.numel(), world = zero_->size();
    gs.shard = (n + world - 1) / world;
    gs.begin = std::min(n, gs.shard * zero_->rank());
    gs.len = std::min(n, gs.begin + gs.shard) - gs.begin;
    gs.m = backend_.zeros({gs.shard}, DType::kF32);
    gs.v = backend_.zeros({gs.shard}, DType::kF32);
    gs.grad_shard = backend_.zeros({gs.shard}, DType::kF32);
    max_shard = std::max(max_shard, gs.shard);
    groups_.push_back(std::move(gs));
  }
  if (zero_ != nullptr) {
    padded_ = backend_.zeros({max_shard * zero_->size()}, DType::kF32);
    staged_ = backend_.zeros({max_shard}, DType::kF32);
  }
  for (auto& p : params) {
    if (!p.trainable) continue;
    MOE_CHECK(p.value.dtype() == DType::kF32, "AdamW: parameter '{}' is {}, expected f32 master "
              "weights", p.name, dtype_name(p.value.dtype()));
    if (p.group >= 0 && p.group < static_cast<int64_t>(groups_.size())) {
      GroupState& g = groups_[static_cast<size_t>(p.group)];
      MOE_CHECK(p.decay == g.group.decay, "AdamW: parameter '{}' has decay {} in a group with "
                "decay {}", p.name, p.decay, g.group.decay);
      if (zero_ != nullptr) {
        states_.push_back({&p, Tensor(), Tensor()});  // moments in the group's shard
      } else {
        states_.push_back({&p, g.m.slice_flat(p.group_offset, p.value.shape()),
                           g.v.slice_flat(p.group_offset, p.value.shape())});
      }
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
  MOE_CHECK(zero_ == nullptr || ungrouped_.empty(), "ZeRO-1 shards the flat parameter groups; "
            "'{}' is trainable but in no group", ungrouped_.empty() ? "" : ungrouped_[0]->param->name);
  norm_sq_ = backend_.zeros({1}, DType::kF32);
}

double AdamW::grad_norm() {
  backend_.fill(norm_sq_, 0.0);
  if (zero_ != nullptr) {
    // Each rank holds the summed gradient of its shard only: add up the shards' squares.
    for (auto& g : groups_) backend_.global_norm_sq(norm_sq_, g.grad_shard);
    float part = 0;
    backend_.download(&part, norm_sq_, sizeof(float));
    std::vector<double> sq = {static_cast<double>(part)};
    zero_->all_reduce_sum_host(sq);
    float rest = 0;
    backend_.fill(norm_sq_, 0.0);
    for (State* s : ungrouped_) backend_.global_norm_sq(norm_sq_, s->param->grad);
    backend_.download(&rest, norm_sq_, sizeof(float));
    return std::sqrt(sq[0] + static_cast<double>(rest));
  }
  for (auto& g : groups_) backend_.global_norm_sq(norm_sq_, g.group.grad);
  for (State* s : ungrouped_) backend_.global_norm_sq(norm_sq_, s->param->grad);
  float sq = 0;
  backend_.download(&sq, norm_sq_, sizeof(float));
  return std::sqrt(static_cast<double>(sq));
}

void AdamW::reduce_scatter_grads() {
  if (zero_ == nullptr) return;
  for (auto& g : groups_) {
    const int64_t n = g.group.grad.numel(), world = zero_->size();
    Tensor in = padded_.slice_flat(0, {g.shard * world});
    Tensor head = in.slice_flat(0, {n});
    backend_.copy(head, g.group.grad);
    if (g.shard * world > n) {
      Tensor pad = in.slice_flat(n, {g.shard * world - n});
      backend_.fill(pad, 0.0);
    }
    zero_->reduce_scatter_sum(g.grad_shard, in);
  }
}

void AdamW::zero_step(GroupState& g, AdamWParams hp) {
  const int64_t world = zero_->size();
  if (g.len > 0) {
    Tensor value = g.group.value.slice_flat(g.begin, {g.len});
    Tensor lowp = g.group.lowp.defined() ? g.group.lowp.slice_flat(g.begin, {g.len}) : Tensor();
    Tensor m = g.m.slice_flat(0, {g.len}), v = g.v.slice_flat(0, {g.len});
    backend_.adamw_step(value, m, v, lowp, g.grad_shard.slice_flat(0, {g.len}), hp);
    Tensor staged = staged_.slice_flat(0, {g.len});
    backend_.copy(staged, value);
  }
  // Every rank's updated shard, back into the full parameters (lowp: refreshed by the caller).
  Tensor out = padded_.slice_flat(0, {g.shard * world});
  zero_->all_gather(out, staged_.slice_flat(0, {g.shard}));
  backend_.copy(g.group.value, out.slice_flat(0, {g.group.value.numel()}));
}

void AdamW::gather_full(GroupState& g, const Tensor& shard, std::vector<float>& out) {
  Tensor all = padded_.slice_flat(0, {g.shard * zero_->size()});
  zero_->all_gather(all, shard);
  out = backend_.download_vec<float>(all);
  out.resize(static_cast<size_t>(g.group.value.numel()));
}

void AdamW::gather_state() {
  if (zero_ == nullptr) return;
  for (auto& g : groups_) {
    gather_full(g, g.m, g.full_m);
    gather_full(g, g.v, g.full_v);
  }
}

int64_t AdamW::state_numel() const {
  int64_t n = 0;
  for (const auto& g : groups_) n += g.m.numel() + g.v.numel();
  for (const State* s : ungrouped_) n += s->m.numel() + s->v.numel();
  return n;
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
    if (zero_ != nullptr) {
      zero_step(g, hp);
    } else {
      backend_.adamw_step(g.group.value, g.m, g.v, g.group.lowp, g.group.grad, hp);
    }
  }
  for (State* s : ungrouped_) {
    hp.weight_decay = s->param->decay ? static_cast<float>(cfg_.weight_decay) : 0.0f;
    backend_.adamw_step(s->param->value, s->m, s->v, s->param->lowp, s->param->grad, hp);
  }
}

void AdamW::save(SafeTensorsWriter& out) {
  if (zero_ != nullptr) {
    // The moments gathered by gather_state(), cut into the parameters' tensors.
    for (auto& s : states_) {
      const Param& p = *s.param;
      if (p.group < 0 || p.group >= static_cast<int64_t>(groups_.size())) {
        out.add_f32("exp_avg." + p.name, s.m.shape(), backend_.download_vec<float>(s.m));
        out.add_f32("exp_avg_sq." + p.name, s.v.shape(), backend_.download_vec<float>(s.v));
        continue;
      }
      const GroupState& g = groups_[static_cast<size_t>(p.group)];
      MOE_CHECK(g.full_m.size() == static_cast<size_t>(g.group.value.numel()), "AdamW::save: "
                "ZeRO-1 state was not gathered (call gather_state() on every rank first)");
      auto cut = [&](const std::vector<float>& full) {
        auto b = full.begin() + p.group_offset;
        return std::vector<float>(b, b + p.value.numel());
      };
      out.add_f32("exp_avg." + p.name, p.value.shape(), cut(g.full_m));
      out.add_f32("exp_avg_sq." + p.name, p.value.shape(), cut(g.full_v));
    }
    return;
  }
  for (auto& s : states_) {
    out.add_f32("exp_avg." + s.param->name, s.m.shape(), backend_.download_vec<float>(s.m));
    out.add_f32("exp_avg_sq." + s.param->name, s.v.shape(), backend_.download_vec<float>(s.v));
  }
}

void AdamW::load(const SafeTensorsReader& in) {
  if (zero_ != nullptr) {
    // Every rank reads the full moments and keeps its shard.
    std::vector<std::vector<float>> full_m(groups_.size()), full_v(groups_.size());
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      full_m[gi].assign(static_cast<size_t>(groups_[gi].shard * zero_->size()), 0.0f);
      full_v[gi] = full_m[gi];
    }
    for (auto& s : states_) {
      const Param& p = *s.param;
      if (p.group < 0 || p.group >= static_cast<int64_t>(groups_.size())) continue;
      for (auto [prefix, full] : {std::pair<const char*, std::vector<float>*>{
                                      "exp_avg.", &full_m[static_cast<size_t>(p.group)]},
                                  {"exp_avg_sq.", &full_v[static_cast<size_t>(p.group)]}}) {
        const std::string name = prefix + p.name;
        MOE_CHECK(in.has(name), "{}: optimizer state '{}' is missing", in.path(), name);
        MOE_CHECK(in.shape(name) == p.value.shape(), "{}: optimizer state '{}' has shape {}, "
                  "the model expects {}", in.path(), name, shape_str(in.shape(name)),
                  shape_str(p.value.shape()));
        std::vector<float> v = in.to_f32(name);
        std::copy(v.begin(), v.end(), full->begin() + p.group_offset);
      }
    }
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      GroupState& g = groups_[gi];
      const auto b = static_cast<size_t>(g.shard * zero_->rank());
      backend_.upload_vec(g.m, std::vector<float>(full_m[gi].begin() + b,
                                                  full_m[gi].begin() + b + g.shard));
      backend_.upload_vec(g.v, std::vector<float>(full_v[gi].begin() + b,
                                                  full_v[gi].begin() + b + g.shard));
    }
    for (State* s : ungrouped_) {
      for (auto [prefix, tensor] : {std::pair<const char*, Tensor*>{"exp_avg.", &s->m},
                                    {"exp_avg_sq.", &s->v}}) {
        const std::string name = prefix + s->param->name;
        MOE_CHECK(in.has(name), "{}: optimizer state '{}' is missing", in.path(), name);
        backend_.upload_vec(*tensor, in.to_f32(name));
      }
    }
    return;
  }
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
