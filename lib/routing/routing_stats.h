// Routing and pathway statistics of docs/model.md §4, accumulated over any number of forward passes.
//
// Feed RoutingAccumulator::add() the std::vector<LayerRouting> of each forward pass (one entry per
// MoE layer, in depth order); finish() returns per-layer statistics, the cross-layer pathway
// matrices of each adjacent MoE-layer pair, and the averages over layers. All sums are kept in
// double or int64 in a fixed order, so the result does not depend on how tokens were batched
// (up to the floating-point order of the per-batch sums, which is fixed for a fixed batching).
//
// Definitions (T = tokens added, s_t = softmax over all E experts, A_t = the k selected experts):
//   entropy            H = -(1/T) sum_t sum_e s_t(e) log s_t(e)   (0 log 0 = 0); also H / log E
//   topk_mass          (1/T) sum_t sum_{e in A_t} s_t(e)
//   overlap            mean cos^2(z_e, z_v) over co-activated ordered pairs
//                      = token-weighted mean of LayerRouting::sp_value / (k (k - 1)).
//                      UNDEFINED for k = 1 (there are no pairs): reported as NaN, written as null
//                      in JSON and "-" in tables. (R_sp is 0 for k = 1, but 0 would claim perfect
//                      specialization, which is not what an absent pair means.)
//   load_fraction[e]   #(token, slot) pairs routed to e / (k T); its max/mean and its coefficient
//                      of variation (population std / mean; mean = 1/E)
//   lb_value           E sum_e f_e P_e, the per-layer Switch load-balancing term of docs/model.md §2
//   pathway C[e][v]    #{t : e in A_t^l, v in A_t^l'} for consecutive MoE layers (l, l')
//   P(v | e)           C[e][v] / sum_v' C[e][v']; a row with no tokens stays all zero and is left
//                      out of the mean row entropy (it has no distribution)
//   row_entropy        mean over rows e with tokens of -sum_v P(v|e) log P(v|e) (nats); also the
//                      mean divided by log E'
//   top1_accuracy      a token's top-1 expert at layer l is the selected expert with the largest
//                      s_t (ties: lower index). The prediction of its top-1 expert at l' is the
//                      argmax of row top1(l) of C (ties: lower index). Accuracy = fraction of
//                      tokens predicted right. C is estimated on the SAME tokens that are scored
//                      (an in-sample plug-in estimate, as a descriptive statistic of the run).
//   top1_accuracy_best the best in-sample predictor from the top-1 expert alone: argmax of the
//                      top-1 -> top-1 transition counts (an upper bound for top1_accuracy).
//   top1_accuracy_marginal  always predicting the most frequent top-1 expert at l' (the baseline
//                      that ignores layer l), so the gain of the pathway is visible.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/model.h"

namespace moe::routing {

struct LayerRoutingStats {
  int64_t layer = 0;  // transformer layer index
  int64_t n_experts = 0, top_k = 0, n_tokens = 0;
  double entropy = 0, entropy_normalized = 0;
  double topk_mass = 0;
  double overlap = 0;  // NaN when top_k == 1
  double lb_value = 0;
  std::vector<double> load_fraction;  // [E]
  std::vector<double> mean_prob;      // [E] P_e = (1/T) sum_t s_t(e)
  double load_max_over_mean = 0, load_cv = 0;
};

struct PathwayStats {
  int64_t layer_from = 0, layer_to = 0;   // transformer layer indices of the pair
  int64_t experts_from = 0, experts_to = 0;
  std::vector<int64_t> counts;            // C [experts_from * experts_to], row-major
  std::vector<double> conditional;        // P(v | e), same layout
  double row_entropy = 0, row_entropy_normalized = 0;
  double top1_accuracy = 0, top1_accuracy_best = 0, top1_accuracy_marginal = 0;
  int64_t n_tokens = 0;
};

struct RoutingSummary {
  int64_t n_tokens = 0;  // tokens counted per layer
  std::vector<LayerRoutingStats> layers;
  std::vector<PathwayStats> pathways;  // layers.size() - 1 entries
  // Unweighted means over layers (resp. over adjacent pairs; NaN when there is no pair).
  double entropy = 0, entropy_normalized = 0, topk_mass = 0, overlap = 0, lb_value = 0;
  double load_max_over_mean = 0, load_cv = 0;
  double row_entropy = 0, row_entropy_normalized = 0;
  double top1_accuracy = 0, top1_accuracy_best = 0, top1_accuracy_marginal = 0;
};

class RoutingAccumulator {
 public:
  // Pass false when the routing comes from a source that did not measure LayerRouting::sp_value
  // (e.g. a routing trace, which holds only expert ids): overlap is then reported as NaN
  // (unmeasured), never as a misleading 0.
  explicit RoutingAccumulator(bool overlap_measured = true) : overlap_measured_(overlap_measured) {}
  // Adds one forward pass. A pass whose LayerRouting::probs are empty is a selection-only pass
  // (a routing trace, routing/trace.h): it counts loads and pathways, with slot 0 of each
  // token's selection taken as its top-1 expert; the probability-based statistics (entropy,
  // topk_mass, lb_value, mean_prob, overlap) are then NaN. Passes of both kinds do not mix.
  // `keep`, when non-empty, has one entry per token (n_tokens of every
  // layer) and excludes tokens whose entry is 0 (padding). Every call must have the same MoE
  // layers (layer index, E, k) as the first one.
  void add(const std::vector<LayerRouting>& routing, const std::vector<uint8_t>& keep = {});
  RoutingSummary finish() const;
  int64_t n_tokens() const { return n_tokens_; }
  void clear();
  // Every sum as one vector of doubles (counts are exact below 2^53), and back: accumulators
  // of several ranks with the same layers combine by summing their packs element-wise
  // (Communicator::all_reduce_sum_host) and unpacking the sum into any of them.
  std::vector<double> pack() const;
  void unpack(const std::vector<double>& sums);

 private:
  struct LayerSums {
    int64_t layer = 0, n_experts = 0, top_k = 0;
    double entropy = 0, topk_mass = 0, sp = 0;
    std::vector<int64_t> load;   // [E]
    std::vector<double> prob;    // [E]
  };
  struct PairSums {
    std::vector<int64_t> counts;       // C [E_l * E_l']
    std::vector<int64_t> top1_counts;  // D [E_l * E_l'], top-1 -> top-1
  };
  void start(const std::vector<LayerRouting>& routing);
  static std::vector<int32_t> top1_experts(const LayerRouting& r);

  bool overlap_measured_ = true;
  int selection_only_ = -1;  // -1: no pass yet; 0: passes with probabilities; 1: without
  int64_t n_tokens_ = 0;
  std::vector<LayerSums> layers_;
  std::vector<PairSums> pairs_;
};

// The statistics as JSON. Per-layer vectors are always included; the pathway matrices (counts
// and P(v|e)) only with include_matrices. NaN becomes null.
nlohmann::json routing_summary_to_json(const RoutingSummary& s, bool include_matrices = true);

}  // namespace moe::routing
