// Placement comparison report (see placement_report.h).
#include "infer/placement_report.h"

#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moe::infer {

std::vector<PlacementRow> evaluate_placements(const routing::RoutingTrace& calibration,
                                              const routing::RoutingTrace& heldout,
                                              const std::vector<std::string>& kinds,
                                              const std::vector<int64_t>& devices,
                                              int64_t d_model, int64_t bytes_per_value,
                                              int64_t seed) {
  MOE_USAGE_CHECK(calibration.n_moe_layers() == heldout.n_moe_layers() &&
                      calibration.n_experts == heldout.n_experts &&
                      calibration.top_k == heldout.top_k,
                  "the calibration and held-out traces have different shapes");
  for (int64_t p : devices) routing::check_devices(calibration.n_experts, p);
  const routing::TransitionGraph g = routing::transition_graph(calibration);
  std::vector<PlacementRow> rows;
  for (int64_t p : devices) {
    for (const std::string& kind : kinds) {
      PlacementRow r;
      r.placement = routing::make_placement(kind, g, p, seed);
      routing::check_balanced(r.placement);
      r.calibration = routing::count_hops(calibration, r.placement, d_model, bytes_per_value);
      r.heldout = routing::count_hops(heldout, r.placement, d_model, bytes_per_value);
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

std::string format_placements(const std::vector<PlacementRow>& rows, const std::string& format) {
  std::ostringstream out;
  if (format == "json") {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      j.push_back({{"placement", r.placement.kind},
                   {"devices", r.placement.devices},
                   {"calibration_cross_fraction", r.calibration.cross_fraction},
                   {"heldout_cross_fraction", r.heldout.cross_fraction},
                   {"heldout_a2a_bytes_per_token", r.heldout.a2a_bytes_per_token},
                   {"heldout_tokens", r.heldout.tokens},
                   {"heldout_hops", r.heldout.hops},
                   {"device_of_expert", r.placement.device}});
    }
    return j.dump(2) + "\n";
  }
  if (format == "csv") {
    out << "placement,devices,calibration_cross_fraction,heldout_cross_fraction,"
           "heldout_a2a_bytes_per_token\n";
    for (const auto& r : rows) {
      out << fmt::format("{},{},{:.4f},{:.4f},{:.1f}\n", r.placement.kind, r.placement.devices,
                         r.calibration.cross_fraction, r.heldout.cross_fraction,
                         r.heldout.a2a_bytes_per_token);
    }
    return out.str();
  }
  MOE_USAGE_CHECK(format == "md", "-o {}: expected md, csv or json", format);
  out << "| placement | P | cross-device hops (calibration) | cross-device hops (held-out) | "
         "all-to-all bytes/token (held-out) |\n|---|--:|--:|--:|--:|\n";
  for (const auto& r : rows) {
    out << fmt::format("| {} | {} | {:.1f}% | {:.1f}% | {:.0f} |\n", r.placement.kind,
                       r.placement.devices, 100 * r.calibration.cross_fraction,
                       100 * r.heldout.cross_fraction, r.heldout.a2a_bytes_per_token);
  }
  return out.str();
}

}  // namespace moe::infer
