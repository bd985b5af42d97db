#include "core/checked.h"

namespace moe {
namespace detail {

void size_overflow(std::string_view what, const char* op, long double a, long double b,
                   const char* type) {
  MOE_USAGE_FAIL("{}: the size {:.0f} {} {:.0f} does not fit in {} (a key or a file holds an "
                 "implausibly large value)", what, a, op, b, type);
}

void size_out_of_range(std::string_view what, long double value, long double lo, long double hi) {
  MOE_USAGE_FAIL("{}: expected a value in [{:.0f}, {:.0f}], found {:.0f}", what, lo, hi, value);
}

}  // namespace detail

int64_t checked_numel(const std::vector<int64_t>& shape, std::string_view what) {
  int64_t n = 1;
  for (int64_t s : shape) {
    MOE_USAGE_CHECK(s >= 0, "{}: expected non-negative extents, found {} in the shape", what, s);
    n = checked_mul<int64_t>(n, s, what);
  }
  return n;
}

}  // namespace moe
