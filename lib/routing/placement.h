// Expert placement under expert parallelism: which of P devices holds each routed expert of
// every MoE layer (E / P experts per device and layer), and what a placement costs in
// cross-device traffic on a routing trace (routing/trace.h).
//
// Traffic model (the one ExFlow, arXiv 2401.08383, optimises): after MoE layer m a token's
// hidden state is combined on the device of its top-1 expert at m (the trace's slot 0). At the
// next MoE layer m+1 it visits each of its k selected experts v: one hop per (token, layer pair,
// slot), which crosses devices when v is not on that device. For each distinct remote device
// among its k experts the token's hidden state (d_model values) is sent there and the partial
// output comes back: 2 x d_model x bytes_per_value per remote device. The first MoE layer's
// dispatch (from wherever the token entered) is the same for every placement and not counted.
//
// The crossing hops of a placement are exactly the cut weight of the transition graph: nodes
// (m, e), edges (m, e) - (m+1, v) weighted by the tokens whose top-1 at m is e and that select v
// at m+1. path-aware partitions that graph with METIS (multi-constraint k-way, one balance
// constraint per layer, a fixed seed: deterministic), then repairs METIS's balance tolerance to
// exactly E / P per device and layer by the cheapest moves, refines by improving swaps within a
// layer (Kernighan-Lin style), and keeps round-robin or contiguous instead if either has a
// smaller cut on the calibration trace, so it is never worse than them there.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "routing/trace.h"

namespace moe::routing {

struct Placement {
  std::string kind;                // "round-robin", "contiguous", "path-aware"
  int64_t n_layers = 0, n_experts = 0, devices = 0;
  std::vector<int32_t> device;     // [M, E]
  int32_t at(int64_t m, int64_t e) const { return device[static_cast<size_t>(m * n_experts + e)]; }
};

struct TransitionGraph {
  int64_t n_layers = 0, n_experts = 0;
  std::vector<int64_t> weight;     // [(M - 1), E, E]: (m, e) -> (m + 1, v)
  int64_t w(int64_t m, int64_t e, int64_t v) const {
    return weight[static_cast<size_t>((m * n_experts + e) * n_experts + v)];
  }
};

struct HopStats {
  int64_t tokens = 0, hops = 0, crossing = 0;
  double cross_fraction = 0;        // crossing / hops
  double a2a_bytes_per_token = 0;   // over all consecutive MoE-layer pairs
};

// Usage error (exit 2) unless 1 <= P <= E and P divides E.
void check_devices(int64_t n_experts, int64_t devices);
TransitionGraph transition_graph(const RoutingTrace& trace);
Placement round_robin_placement(int64_t n_layers, int64_t n_experts, int64_t devices);
Placement contiguous_placement(int64_t n_layers, int64_t n_experts, int64_t devices);
Placement path_aware_placement(const TransitionGraph& g, int64_t devices, int64_t seed = 1);
// "round-robin" | "contiguous" | "path-aware" (the last needs the calibration graph).
Placement make_placement(const std::string& kind, const TransitionGraph& calibration,
                         int64_t devices, int64_t seed = 1);
// Throws (internal error) unless every device holds E / P experts of every layer.
void check_balanced(const Placement& p);
int64_t cut_weight(const TransitionGraph& g, const Placement& p);
HopStats count_hops(const RoutingTrace& trace, const Placement& p, int64_t d_model,
                    int64_t bytes_per_value);

}  // namespace moe::routing
