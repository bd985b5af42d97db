// Helpers shared by config.cpp (parsing) and config_validate.cpp (range checks).
#pragma once
#include <cstddef>
#include <string>

namespace moe::detail {

// Levenshtein distance, for the "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace moe::detail
