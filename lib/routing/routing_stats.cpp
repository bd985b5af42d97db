// Routing and pathway statistics (docs/model.md §4): accumulation of per-token sums over forward passes,
// and the final per-layer / per-pair / averaged numbers. See routing_stats.h for definitions.
#include "routing/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moe::routing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_layer(const LayerRouting& r, int64_t n_tokens) {
  MOE_CHECK(r.n_tokens == n_tokens, "routing: layer {} has {} tokens, layer 0 of this pass has {}",
            r.layer, r.n_tokens, n_tokens);
  MOE_CHECK(r.n_experts > 0 && r.top_k > 0 && r.top_k <= r.n_experts,
            "routing: layer {} has E={} k={} (expected 0 < k <= E)", r.layer, r.n_experts, r.top_k);
  MOE_CHECK(r.probs.empty() || static_cast<int64_t>(r.probs.size()) == r.n_tokens * r.n_experts,
            "routing: layer {} probs has {} values, expected N*E = {}", r.layer, r.probs.size(),
            r.n_tokens * r.n_experts);
  MOE_CHECK(static_cast<int64_t>(r.topk_idx.size()) == r.n_tokens * r.top_k,
            "routing: layer {} topk_idx has {} values, expected N*k = {}", r.layer,
            r.topk_idx.size(), r.n_tokens * r.top_k);
  for (size_t i = 0; i < r.topk_idx.size(); ++i) {
    MOE_CHECK(r.topk_idx[i] >= 0 && r.topk_idx[i] < r.n_experts,
              "routing: layer {} token {} selects expert {} of {}", r.layer,
              static_cast<int64_t>(i) / r.top_k, r.topk_idx[i], r.n_experts);
  }
}

// Index of the largest value; ties go to the lower index. Returns -1 for an all-zero row.
template <typename T>
int64_t argmax_row(const T* row, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (row[i] > 0 && (best < 0 || row[i] > row[best])) best = i;
  }
  return best;
}

int64_t count_kept(const std::vector<uint8_t>& keep) {
  int64_t n = 0;
  for (uint8_t k : keep) n += k != 0;
  return n;
}

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

LayerRoutingStats finish_layer(int64_t layer, int64_t E, int64_t k, double entropy,
                               double topk_mass, double sp, const std::vector<int64_t>& load,
                               const std::vector<double>& prob, int64_t T) {
  LayerRoutingStats st;
  st.layer = layer;
  st.n_experts = E;
  st.top_k = k;
  st.n_tokens = T;
  const double inv_t = T > 0 ? 1.0 / static_cast<double>(T) : kNaN;
  st.entropy = entropy * inv_t;
  st.entropy_normalized = E > 1 ? st.entropy / std::log(static_cast<double>(E)) : 0.0;
  st.topk_mass = topk_mass * inv_t;
  st.overlap = k > 1 ? sp * inv_t / static_cast<double>(k * (k - 1)) : kNaN;
  st.load_fraction.resize(E);
  st.mean_prob.resize(E);
  const double slots = static_cast<double>(k * T);
  double max_f = 0, lb = 0, var = 0;
  const double mean_f = 1.0 / static_cast<double>(E);
  for (int64_t e = 0; e < E; ++e) {
    st.load_fraction[e] = T > 0 ? load[e] / slots : kNaN;
    st.mean_prob[e] = prob[e] * inv_t;
    max_f = std::max(max_f, st.load_fraction[e]);
    lb += st.load_fraction[e] * st.mean_prob[e];
    var += (st.load_fraction[e] - mean_f) * (st.load_fraction[e] - mean_f);
  }
  st.lb_value = static_cast<double>(E) * lb;
  st.load_max_over_mean = T > 0 ? max_f / mean_f : kNaN;
  st.load_cv = T > 0 ? std::sqrt(var / static_cast<double>(E)) / mean_f : kNaN;
  return st;
}

PathwayStats finish_pair(const LayerRoutingStats& from, const LayerRoutingStats& to,
                         const std::vector<int64_t>& C, const std::vector<int64_t>& D) {
  PathwayStats p;
  p.layer_from = from.layer;
  p.layer_to = to.layer;
  const int64_t E1 = from.n_experts, E2 = to.n_experts;
  p.experts_from = E1;
  p.experts_to = E2;
  p.counts = C;
  p.conditional.assign(C.size(), 0.0);
  p.n_tokens = from.n_tokens;
  std::vector<double> row_entropies;
  std::vector<int64_t> top1_to(E2, 0);  // marginal of the top-1 expert at l'
  int64_t correct = 0, best = 0, total = 0;
  for (int64_t e = 0; e < E1; ++e) {
    const int64_t* crow = &C[e * E2];
    const int64_t* drow = &D[e * E2];
    int64_t row_sum = 0;
    for (int64_t v = 0; v < E2; ++v) row_sum += crow[v];
    if (row_sum > 0) {
      double h = 0;
      for (int64_t v = 0; v < E2; ++v) {
        const double q = static_cast<double>(crow[v]) / static_cast<double>(row_sum);
        p.conditional[e * E2 + v] = q;
        if (q > 0) h -= q * std::log(q);
      }
      row_entropies.push_back(h);
    }
    const int64_t pred = argmax_row(crow, E2);
    const int64_t best_pred = argmax_row(drow, E2);
    for (int64_t v = 0; v < E2; ++v) {
      total += drow[v];
      top1_to[v] += drow[v];
    }
    if (pred >= 0) correct += drow[pred];
    if (best_pred >= 0) best += drow[best_pred];
  }
  const int64_t marginal_pred = argmax_row(top1_to.data(), E2);
  const double inv = total > 0 ? 1.0 / static_cast<double>(total) : kNaN;
  p.top1_accuracy = static_cast<double>(correct) * inv;
  p.top1_accuracy_best = static_cast<double>(best) * inv;
  p.top1_accuracy_marginal =
      marginal_pred >= 0 ? static_cast<double>(top1_to[marginal_pred]) * inv : kNaN;
  p.row_entropy = mean_of(row_entropies);
  p.row_entropy_normalized = E2 > 1 ? p.row_entropy / std::log(static_cast<double>(E2)) : 0.0;
  return p;
}

}  // namespace

void RoutingAccumulator::clear() {
  n_tokens_ = 0;
  selection_only_ = -1;
  layers_.clear();
  pairs_.clear();
}

std::vector<double> RoutingAccumulator::pack() const {
  std::vector<double> out = {static_cast<double>(n_tokens_)};
  for (const auto& l : layers_) {
    out.insert(out.end(), {l.entropy, l.topk_mass, l.sp});
    out.insert(out.end(), l.load.begin(), l.load.end());
    out.insert(out.end(), l.prob.begin(), l.prob.end());
  }
  for (const auto& p : pairs_) {
    out.insert(out.end(), p.counts.begin(), p.counts.end());
    out.insert(out.end(), p.top1_counts.begin(), p.top1_counts.end());
  }
  return out;
}

void RoutingAccumulator::unpack(const std::vector<double>& sums) {
  MOE_CHECK(sums.size() == pack().size(), "RoutingAccumulator::unpack: {} values for an "
            "accumulator of {}", sums.size(), pack().size());
  size_t i = 0;
  auto next_int = [&]() { return static_cast<int64_t>(std::llround(sums[i++])); };
  n_tokens_ = next_int();
  for (auto& l : layers_) {
    l.entropy = sums[i++];
    l.topk_mass = sums[i++];
    l.sp = sums[i++];
    for (auto& x : l.load) x = next_int();
    for (auto& x : l.prob) x = sums[i++];
  }
  for (auto& p : pairs_) {
    for (auto& x : p.counts) x = next_int();
    for (auto& x : p.top1_counts) x = next_int();
  }
}

void RoutingAccumulator::start(const std::vector<LayerRouting>& routing) {
  layers_.resize(routing.size());
  for (size_t l = 0; l < routing.size(); ++l) {
    layers_[l].layer = routing[l].layer;
    layers_[l].n_experts = routing[l].n_experts;
    layers_[l].top_k = routing[l].top_k;
    layers_[l].load.assign(routing[l].n_experts, 0);
    layers_[l].prob.assign(routing[l].n_experts, 0.0);
  }
  pairs_.resize(routing.empty() ? 0 : routing.size() - 1);
  for (size_t l = 0; l + 1 < routing.size(); ++l) {
    const size_t cells = routing[l].n_experts * routing[l + 1].n_experts;
    pairs_[l].counts.assign(cells, 0);
    pairs_[l].top1_counts.assign(cells, 0);
  }
}

std::vector<int32_t> RoutingAccumulator::top1_experts(const LayerRouting& r) {
  std::vector<int32_t> top1(r.n_tokens);
  for (int64_t t = 0; t < r.n_tokens; ++t) {
    const int32_t* sel = &r.topk_idx[t * r.top_k];
    if (r.probs.empty()) {  // a trace: slot 0 is the top-1
      top1[t] = sel[0];
      continue;
    }
    const float* s = &r.probs[t * r.n_experts];
    int32_t best = sel[0];
    for (int64_t j = 1; j < r.top_k; ++j) {
      if (s[sel[j]] > s[best] || (s[sel[j]] == s[best] && sel[j] < best)) best = sel[j];
    }
    top1[t] = best;
  }
  return top1;
}

void RoutingAccumulator::add(const std::vector<LayerRouting>& routing,
                             const std::vector<uint8_t>& keep) {
  MOE_CHECK(!routing.empty(), "routing: add() got no MoE layer (is the model dense?)");
  // Validate everything before touching the sums, so a rejected pass leaves them unchanged.
  const int64_t N = routing[0].n_tokens;
  MOE_CHECK(keep.empty() || static_cast<int64_t>(keep.size()) == N,
            "routing: keep mask has {} entries for {} tokens", keep.size(), N);
  MOE_CHECK(layers_.empty() || routing.size() == layers_.size(),
            "routing: {} MoE layers in this pass, {} before", routing.size(), layers_.size());
  for (size_t l = 0; l < routing.size(); ++l) {
    const LayerRouting& r = routing[l];
    check_layer(r, N);
    if (layers_.empty()) continue;
    const LayerSums& acc = layers_[l];
    MOE_CHECK(r.layer == acc.layer && r.n_experts == acc.n_experts && r.top_k == acc.top_k,
              "routing: MoE layer #{} is (layer {}, E={}, k={}), before it was ({}, {}, {})", l,
              r.layer, r.n_experts, r.top_k, acc.layer, acc.n_experts, acc.top_k);
  }
  const int selection_only = routing[0].probs.empty() ? 1 : 0;
  for (const LayerRouting& r : routing) {
    MOE_CHECK((r.probs.empty() ? 1 : 0) == selection_only, "routing: layer {} has {} "
              "probabilities, layer {} {}", r.layer, r.probs.size(), routing[0].layer,
              routing[0].probs.size());
  }
  MOE_CHECK(selection_only_ < 0 || selection_only_ == selection_only, "routing: a pass {} "
            "router probabilities after passes {} them", selection_only ? "without" : "with",
            selection_only_ ? "without" : "with");
  if (layers_.empty()) start(routing);
  selection_only_ = selection_only;
  std::vector<std::vector<int32_t>> top1(routing.size());
  for (size_t l = 0; l < routing.size(); ++l) {
    const LayerRouting& r = routing[l];
    LayerSums& acc = layers_[l];
    const int64_t E = r.n_experts, k = r.top_k;
    for (int64_t t = 0; t < N; ++t) {
      if (!keep.empty() && !keep[t]) continue;
      if (selection_only) {
        for (int64_t j = 0; j < k; ++j) acc.load[r.topk_idx[t * k + j]] += 1;
        continue;
      }
      const float* s = &r.probs[t * E];
      double h = 0, mass = 0;
      for (int64_t e = 0; e < E; ++e) {
        if (s[e] > 0) h -= static_cast<double>(s[e]) * std::log(static_cast<double>(s[e]));
        acc.prob[e] += s[e];
      }
      for (int64_t j = 0; j < k; ++j) {
        const int32_t e = r.topk_idx[t * k + j];
        mass += s[e];
        acc.load[e] += 1;
      }
      acc.entropy += h;
      acc.topk_mass += mass;
    }
    // sp_value is a mean over all N tokens of the pass; with a mask it is taken as representative
    // of the kept tokens (per-token cos^2 is not part of LayerRouting).
    const int64_t kept = keep.empty() ? N : count_kept(keep);
    acc.sp += r.sp_value * static_cast<double>(kept);
    top1[l] = top1_experts(r);
  }
  for (size_t l = 0; l + 1 < routing.size(); ++l) {
    const LayerRouting &a = routing[l], &b = routing[l + 1];
    PairSums& pair = pairs_[l];
    const int64_t E2 = b.n_experts;
    for (int64_t t = 0; t < N; ++t) {
      if (!keep.empty() && !keep[t]) continue;
      for (int64_t i = 0; i < a.top_k; ++i) {
        const int64_t e = a.topk_idx[t * a.top_k + i];
        for (int64_t j = 0; j < b.top_k; ++j) pair.counts[e * E2 + b.topk_idx[t * b.top_k + j]]++;
      }
      pair.top1_counts[top1[l][t] * E2 + top1[l + 1][t]]++;
    }
  }
  n_tokens_ += keep.empty() ? N : count_kept(keep);
}

RoutingSummary RoutingAccumulator::finish() const {
  RoutingSummary out;
  out.n_tokens = n_tokens_;
  for (const LayerSums& acc : layers_) {
    out.layers.push_back(finish_layer(acc.layer, acc.n_experts, acc.top_k, acc.entropy,
                                      acc.topk_mass, acc.sp, acc.load, acc.prob, n_tokens_));
    if (!overlap_measured_ || selection_only_ == 1) out.layers.back().overlap = kNaN;
    if (selection_only_ == 1) {  // no probabilities were seen
      LayerRoutingStats& st = out.layers.back();
      st.entropy = st.entropy_normalized = st.topk_mass = st.lb_value = kNaN;
      std::fill(st.mean_prob.begin(), st.mean_prob.end(), kNaN);
    }
  }
  for (size_t l = 0; l < pairs_.size(); ++l) {
    out.pathways.push_back(
        finish_pair(out.layers[l], out.layers[l + 1], pairs_[l].counts, pairs_[l].top1_counts));
  }
  auto avg_layers = [&](double LayerRoutingStats::*field) {
    std::vector<double> v;
    for (const auto& st : out.layers) v.push_back(st.*field);
    return mean_of(v);
  };
  auto avg_pairs = [&](double PathwayStats::*field) {
    std::vector<double> v;
    for (const auto& p : out.pathways) v.push_back(p.*field);
    return mean_of(v);
  };
  out.entropy = avg_layers(&LayerRoutingStats::entropy);
  out.entropy_normalized = avg_layers(&LayerRoutingStats::entropy_normalized);
  out.topk_mass = avg_layers(&LayerRoutingStats::topk_mass);
  out.overlap = avg_layers(&LayerRoutingStats::overlap);
  out.lb_value = avg_layers(&LayerRoutingStats::lb_value);
  out.load_max_over_mean = avg_layers(&LayerRoutingStats::load_max_over_mean);
  out.load_cv = avg_layers(&LayerRoutingStats::load_cv);
  out.row_entropy = avg_pairs(&PathwayStats::row_entropy);
  out.row_entropy_normalized = avg_pairs(&PathwayStats::row_entropy_normalized);
  out.top1_accuracy = avg_pairs(&PathwayStats::top1_accuracy);
  out.top1_accuracy_best = avg_pairs(&PathwayStats::top1_accuracy_best);
  out.top1_accuracy_marginal = avg_pairs(&PathwayStats::top1_accuracy_marginal);
  return out;
}

namespace {
nlohmann::json num(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }
nlohmann::json nums(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double x : v) a.push_back(num(x));
  return a;
}
}  // namespace

nlohmann::json routing_summary_to_json(const RoutingSummary& s, bool include_matrices) {
  using nlohmann::json;
  json j;
  j["n_tokens"] = s.n_tokens;
  j["average"] = {{"entropy", num(s.entropy)},
                  {"entropy_normalized", num(s.entropy_normalized)},
                  {"topk_mass", num(s.topk_mass)},
                  {"overlap", num(s.overlap)},
                  {"lb_value", num(s.lb_value)},
                  {"load_max_over_mean", num(s.load_max_over_mean)},
                  {"load_cv", num(s.load_cv)},
                  {"pathway_row_entropy", num(s.row_entropy)},
                  {"pathway_row_entropy_normalized", num(s.row_entropy_normalized)},
                  {"pathway_top1_accuracy", num(s.top1_accuracy)},
                  {"pathway_top1_accuracy_best", num(s.top1_accuracy_best)},
                  {"pathway_top1_accuracy_marginal", num(s.top1_accuracy_marginal)}};
  j["layers"] = json::array();
  for (const auto& st : s.layers) {
    j["layers"].push_back({{"layer", st.layer},
                           {"n_experts", st.n_experts},
                           {"top_k", st.top_k},
                           {"entropy", num(st.entropy)},
                           {"entropy_normalized", num(st.entropy_normalized)},
                           {"topk_mass", num(st.topk_mass)},
                           {"overlap", num(st.overlap)},
                           {"lb_value", num(st.lb_value)},
                           {"load_max_over_mean", num(st.load_max_over_mean)},
                           {"load_cv", num(st.load_cv)},
                           {"load_fraction", nums(st.load_fraction)},
                           {"mean_prob", nums(st.mean_prob)}});
  }
  j["pathways"] = json::array();
  for (const auto& p : s.pathways) {
    json pj = {{"layer_from", p.layer_from},
               {"layer_to", p.layer_to},
               {"experts_from", p.experts_from},
               {"experts_to", p.experts_to},
               {"row_entropy", num(p.row_entropy)},
               {"row_entropy_normalized", num(p.row_entropy_normalized)},
               {"top1_accuracy", num(p.top1_accuracy)},
               {"top1_accuracy_best", num(p.top1_accuracy_best)},
               {"top1_accuracy_marginal", num(p.top1_accuracy_marginal)}};
    if (include_matrices) {
      json counts = json::array(), cond = json::array();
      for (int64_t e = 0; e < p.experts_from; ++e) {
        std::vector<int64_t> crow(p.counts.begin() + e * p.experts_to,
                                  p.counts.begin() + (e + 1) * p.experts_to);
        std::vector<double> prow(p.conditional.begin() + e * p.experts_to,
                                 p.conditional.begin() + (e + 1) * p.experts_to);
        counts.push_back(crow);
        cond.push_back(nums(prow));
      }
      pj["counts"] = counts;
      pj["conditional"] = cond;
    }
    j["pathways"].push_back(pj);
  }
  return j;
}

}  // namespace moe::routing
