// moeinfer --placement: each requested placement at each device count, built from a calibration
// trace and measured on it and on a held-out trace (routing/placement.h for the traffic model).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "routing/placement.h"

namespace moe::infer {

struct PlacementRow {
  routing::Placement placement;
  routing::HopStats calibration, heldout;
};

std::vector<PlacementRow> evaluate_placements(const routing::RoutingTrace& calibration,
                                              const routing::RoutingTrace& heldout,
                                              const std::vector<std::string>& kinds,
                                              const std::vector<int64_t>& devices,
                                              int64_t d_model, int64_t bytes_per_value,
                                              int64_t seed);
// md (default) | csv | json (json includes every placement's device map).
std::string format_placements(const std::vector<PlacementRow>& rows, const std::string& format);

}  // namespace moe::infer
