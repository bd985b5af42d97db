// Expert placement and its cross-device traffic (see placement.h).
#include "routing/placement.h"

#include <metis.h>

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace moe::routing {
namespace {

Placement empty_placement(const char* kind, int64_t M, int64_t E, int64_t P) {
  Placement p;
  p.kind = kind;
  p.n_layers = M;
  p.n_experts = E;
  p.devices = P;
  p.device.assign(static_cast<size_t>(M * E), 0);
  return p;
}

// Weight of the edges between node (m, e) and the nodes of its neighbouring layers that sit on
// device `dev` under placement p (the cut that placing (m, e) on dev avoids).
int64_t affinity(const TransitionGraph& g, const Placement& p, int64_t m, int64_t e, int32_t dev) {
  const int64_t E = g.n_experts;
  int64_t s = 0;
  if (m + 1 < g.n_layers) {
    for (int64_t v = 0; v < E; ++v) s += p.at(m + 1, v) == dev ? g.w(m, e, v) : 0;
  }
  if (m > 0) {
    for (int64_t u = 0; u < E; ++u) s += p.at(m - 1, u) == dev ? g.w(m - 1, u, e) : 0;
  }
  return s;
}

// METIS's balance tolerance can leave a device with more than E / P experts of a layer: move
// the cheapest experts from over- to underfull devices until every count is exactly E / P.
void repair_balance(const TransitionGraph& g, Placement& p) {
  const int64_t E = p.n_experts, P = p.devices, per = E / P;
  for (int64_t m = 0; m < p.n_layers; ++m) {
    for (;;) {
      std::vector<int64_t> count(static_cast<size_t>(P), 0);
      for (int64_t e = 0; e < E; ++e) count[p.at(m, e)]++;
      int64_t best_e = -1, best_cost = std::numeric_limits<int64_t>::max();
      int32_t best_to = -1;
      for (int64_t e = 0; e < E; ++e) {
        const int32_t from = p.at(m, e);
        if (count[from] <= per) continue;
        const int64_t keep = affinity(g, p, m, e, from);
        for (int32_t to = 0; to < P; ++to) {
          if (count[to] >= per) continue;
          const int64_t cost = keep - affinity(g, p, m, e, to);
          if (cost < best_cost) {
            best_cost = cost;
            best_e = e;
            best_to = to;
          }
        }
      }
      if (best_e < 0) break;
      p.device[static_cast<size_t>(m * E + best_e)] = best_to;
    }
  }
}

// Swaps of two experts of one layer on different devices, best gain first, while one lowers the
// cut (each swap strictly lowers an integer >= 0, so this ends).
void refine_by_swaps(const TransitionGraph& g, Placement& p) {
  const int64_t E = p.n_experts;
  for (bool improved = true; improved;) {
    improved = false;
    for (int64_t m = 0; m < p.n_layers; ++m) {
      int64_t best_gain = 0, best_a = -1, best_b = -1;
      for (int64_t a = 0; a < E; ++a) {
        for (int64_t b = a + 1; b < E; ++b) {
          const int32_t da = p.at(m, a), db = p.at(m, b);
          if (da == db) continue;
          // Edges between a and b lie in one layer: none (the graph links adjacent layers only).
          const int64_t gain = affinity(g, p, m, a, db) - affinity(g, p, m, a, da) +
                               affinity(g, p, m, b, da) - affinity(g, p, m, b, db);
          if (gain > best_gain) {
            best_gain = gain;
            best_a = a;
            best_b = b;
          }
        }
      }
      if (best_a >= 0) {
        std::swap(p.device[static_cast<size_t>(m * E + best_a)],
                  p.device[static_cast<size_t>(m * E + best_b)]);
        improved = true;
      }
    }
  }
}

}  // namespace

void check_devices(int64_t n_experts, int64_t devices) {
  MOE_USAGE_CHECK(devices >= 1 && devices <= n_experts && n_experts % devices == 0,
                  "--devices {}: the {} routed experts of a layer must split evenly over the "
                  "devices (P must divide E)", devices, n_experts);
}

TransitionGraph transition_graph(const RoutingTrace& trace) {
  TransitionGraph g;
  g.n_layers = trace.n_moe_layers();
  g.n_experts = trace.n_experts;
  const int64_t M = g.n_layers, E = g.n_experts, k = trace.top_k, T = trace.n_tokens();
  g.weight.assign(static_cast<size_t>(std::max<int64_t>(M - 1, 0) * E * E), 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t m = 0; m + 1 < M; ++m) {
      const int64_t e = trace.expert(t, m, 0);
      for (int64_t j = 0; j < k; ++j) {
        g.weight[static_cast<size_t>((m * E + e) * E + trace.expert(t, m + 1, j))]++;
      }
    }
  }
  return g;
}

Placement round_robin_placement(int64_t M, int64_t E, int64_t P) {
  check_devices(E, P);
  Placement p = empty_placement("round-robin", M, E, P);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t e = 0; e < E; ++e) {
      p.device[static_cast<size_t>(m * E + e)] = static_cast<int32_t>(e % P);
    }
  }
  return p;
}

Placement contiguous_placement(int64_t M, int64_t E, int64_t P) {
  check_devices(E, P);
  Placement p = empty_placement("contiguous", M, E, P);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t e = 0; e < E; ++e) {
      p.device[static_cast<size_t>(m * E + e)] = static_cast<int32_t>(e / (E / P));
    }
  }
  return p;
}

Placement path_aware_placement(const TransitionGraph& g, int64_t devices, int64_t seed) {
  const int64_t M = g.n_layers, E = g.n_experts, P = devices;
  check_devices(E, P);
  Placement p = empty_placement("path-aware", M, E, P);
  if (P > 1 && M > 1) {
    // Symmetric CSR adjacency of the (M * E)-node graph; METIS wants positive edge weights.
    const int64_t n = M * E;
    std::vector<std::vector<std::pair<idx_t, idx_t>>> adj(static_cast<size_t>(n));
    for (int64_t m = 0; m + 1 < M; ++m) {
      for (int64_t e = 0; e < E; ++e) {
        for (int64_t v = 0; v < E; ++v) {
          const int64_t w = g.w(m, e, v);
          if (w == 0) continue;
          MOE_CHECK(w <= std::numeric_limits<idx_t>::max(), "placement: edge weight {} exceeds "
                    "METIS's 32-bit integers", w);
          adj[m * E + e].push_back({static_cast<idx_t>((m + 1) * E + v), static_cast<idx_t>(w)});
          adj[(m + 1) * E + v].push_back({static_cast<idx_t>(m * E + e), static_cast<idx_t>(w)});
        }
      }
    }
    std::vector<idx_t> xadj{0}, adjncy, adjwgt, vwgt(static_cast<size_t>(n * M), 0), part(n, 0);
    for (int64_t i = 0; i < n; ++i) {
      std::sort(adj[i].begin(), adj[i].end());
      for (const auto& [j, w] : adj[i]) {
        adjncy.push_back(j);
        adjwgt.push_back(w);
      }
      xadj.push_back(static_cast<idx_t>(adjncy.size()));
      vwgt[static_cast<size_t>(i * M + i / E)] = 1;  // constraint m counts layer m's experts
    }
    idx_t nvtxs = static_cast<idx_t>(n), ncon = static_cast<idx_t>(M);
    idx_t nparts = static_cast<idx_t>(P), objval = 0;
    std::vector<real_t> ubvec(static_cast<size_t>(M), 1.05f);
    idx_t options[METIS_NOPTIONS];
    METIS_SetDefaultOptions(options);
    options[METIS_OPTION_SEED] = static_cast<idx_t>(seed);
    options[METIS_OPTION_NUMBERING] = 0;
    options[METIS_OPTION_NCUTS] = 4;  // best of 4 partitionings (all seeded: deterministic)
    if (adjncy.empty()) adjncy.push_back(0), adjwgt.push_back(1);  // METIS needs a non-null array
    const int rc = METIS_PartGraphKway(&nvtxs, &ncon, xadj.data(), adjncy.data(), vwgt.data(),
                                       nullptr, adjwgt.data(), &nparts, nullptr, ubvec.data(),
                                       options, &objval, part.data());
    MOE_CHECK(rc == METIS_OK, "placement: METIS_PartGraphKway failed (code {}) on {} nodes, {} "
              "constraints, {} parts", rc, n, M, P);
    for (int64_t i = 0; i < n; ++i) {
      p.device[static_cast<size_t>(i)] = static_cast<int32_t>(part[i]);
    }
    repair_balance(g, p);
    refine_by_swaps(g, p);
  } else if (P > 1) {
    p = round_robin_placement(M, E, P);  // one MoE layer: no transition to keep local
  }
  check_balanced(p);
  // Never worse than the fixed placements on the calibration trace.
  for (const Placement& fixed : {round_robin_placement(M, E, P), contiguous_placement(M, E, P)}) {
    if (cut_weight(g, fixed) < cut_weight(g, p)) p.device = fixed.device;
  }
  p.kind = "path-aware";
  return p;
}

Placement make_placement(const std::string& kind, const TransitionGraph& calibration,
                         int64_t devices, int64_t seed) {
  if (kind == "round-robin") {
    return round_robin_placement(calibration.n_layers, calibration.n_experts, devices);
  }
  if (kind == "contiguous") {
    return contiguous_placement(calibration.n_layers, calibration.n_experts, devices);
  }
  MOE_USAGE_CHECK(kind == "path-aware", "--placement {}: expected round-robin, contiguous or "
                  "path-aware", kind);
  return path_aware_placement(calibration, devices, seed);
}

void check_balanced(const Placement& p) {
  const int64_t per = p.n_experts / p.devices;
  for (int64_t m = 0; m < p.n_layers; ++m) {
    std::vector<int64_t> count(static_cast<size_t>(p.devices), 0);
    for (int64_t e = 0; e < p.n_experts; ++e) {
      const int32_t d = p.at(m, e);
      MOE_CHECK(d >= 0 && d < p.devices, "placement: expert {} of MoE layer {} on device {} of "
                "{}", e, m, d, p.devices);
      count[d]++;
    }
    for (int64_t d = 0; d < p.devices; ++d) {
      MOE_CHECK(count[d] == per, "placement {}: device {} holds {} experts of MoE layer {}, "
                "expected {}", p.kind, d, count[d], m, per);
    }
  }
}

int64_t cut_weight(const TransitionGraph& g, const Placement& p) {
  int64_t cut = 0;
  const int64_t E = g.n_experts;
  for (int64_t m = 0; m + 1 < g.n_layers; ++m) {
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t v = 0; v < E; ++v) cut += p.at(m, e) != p.at(m + 1, v) ? g.w(m, e, v) : 0;
    }
  }
  return cut;
}

HopStats count_hops(const RoutingTrace& trace, const Placement& p, int64_t d_model,
                    int64_t bytes_per_value) {
  MOE_USAGE_CHECK(trace.n_moe_layers() == p.n_layers && trace.n_experts == p.n_experts,
                  "placement for {} layers x {} experts, the trace has {} x {}", p.n_layers,
                  p.n_experts, trace.n_moe_layers(), trace.n_experts);
  HopStats s;
  s.tokens = trace.n_tokens();
  const int64_t M = p.n_layers, k = trace.top_k;
  int64_t remote_devices = 0;
  std::vector<int32_t> seen;
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t m = 0; m + 1 < M; ++m) {
      const int32_t home = p.at(m, trace.expert(t, m, 0));
      seen.clear();
      for (int64_t j = 0; j < k; ++j) {
        const int32_t d = p.at(m + 1, trace.expert(t, m + 1, j));
        s.hops++;
        if (d == home) continue;
        s.crossing++;
        if (std::find(seen.begin(), seen.end(), d) == seen.end()) seen.push_back(d);
      }
      remote_devices += static_cast<int64_t>(seen.size());
    }
  }
  s.cross_fraction = s.hops > 0 ? static_cast<double>(s.crossing) / static_cast<double>(s.hops) : 0;
  s.a2a_bytes_per_token = s.tokens > 0 ? 2.0 * static_cast<double>(d_model * bytes_per_value) *
                                             static_cast<double>(remote_devices) /
                                             static_cast<double>(s.tokens)
                                       : 0;
  return s;
}

}  // namespace moe::routing
