// Exact integer arithmetic for sizes that come from outside: a config key, a checkpoint, a
// safetensors header. A product of such sizes can wrap silently (signed overflow is undefined
// behaviour, and a wrapped byte count can even pass a size check), so each operation here either
// returns the exact result or raises a usage error (exit code 2) that names what was being
// computed, e.g. the config key or the tensor. Internal arithmetic on sizes already checked this
// way needs no second check.
#pragma once
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace moe {

namespace detail {
[[noreturn]] void size_overflow(std::string_view what, const char* op, long double a,
                                long double b, const char* type);
[[noreturn]] void size_out_of_range(std::string_view what, long double value, long double lo,
                                    long double hi);
}  // namespace detail

// a * b and a + b in T (an integer type), or a usage error naming `what`.
template <typename T>
T checked_mul(T a, T b, std::string_view what) {
  static_assert(std::is_integral_v<T>, "checked_mul: integer types only");
  T r;
  if (__builtin_mul_overflow(a, b, &r)) {
    detail::size_overflow(what, "*", static_cast<long double>(a), static_cast<long double>(b),
                          std::is_signed_v<T> ? "a signed 64-bit integer" : "an unsigned integer");
  }
  return r;
}
template <typename T>
T checked_add(T a, T b, std::string_view what) {
  static_assert(std::is_integral_v<T>, "checked_add: integer types only");
  T r;
  if (__builtin_add_overflow(a, b, &r)) {
    detail::size_overflow(what, "+", static_cast<long double>(a), static_cast<long double>(b),
                          std::is_signed_v<T> ? "a signed 64-bit integer" : "an unsigned integer");
  }
  return r;
}

// `value` converted to To when it is representable, or a usage error naming `what`.
template <typename To, typename From>
To checked_cast(From value, std::string_view what) {
  static_assert(std::is_integral_v<To> && std::is_integral_v<From>, "checked_cast: integers");
  To r;
  if (__builtin_add_overflow(value, From{0}, &r)) {
    detail::size_out_of_range(what, static_cast<long double>(value),
                              static_cast<long double>(std::numeric_limits<To>::min()),
                              static_cast<long double>(std::numeric_limits<To>::max()));
  }
  return r;
}

// The element count of a shape: every extent >= 0 and the product exact in int64.
int64_t checked_numel(const std::vector<int64_t>& shape, std::string_view what);

// An int64 that overflows loudly: for formulas with many products of config sizes (parameter
// counts, memory estimates). Every operation is checked; the error names the `what` that an
// operand carries (plain integer constants carry none), so a formula names its inputs once.
class CheckedInt {
 public:
  constexpr CheckedInt(int64_t v, const char* what = nullptr) : v_(v), what_(what) {}
  int64_t value() const { return v_; }
  const char* what() const { return what_ ? what_ : "a size"; }
  friend CheckedInt operator*(CheckedInt a, CheckedInt b) {
    const char* w = a.what_ ? a.what_ : b.what_;
    return {checked_mul<int64_t>(a.v_, b.v_, w ? w : "a size"), w};
  }
  friend CheckedInt operator+(CheckedInt a, CheckedInt b) {
    const char* w = a.what_ ? a.what_ : b.what_;
    return {checked_add<int64_t>(a.v_, b.v_, w ? w : "a size"), w};
  }
  friend CheckedInt operator-(CheckedInt a, CheckedInt b) {
    const char* w = a.what_ ? a.what_ : b.what_;
    int64_t r;
    if (__builtin_sub_overflow(a.v_, b.v_, &r)) {
      detail::size_overflow(w ? w : "a size", "-", static_cast<long double>(a.v_),
                            static_cast<long double>(b.v_), "a signed 64-bit integer");
    }
    return {r, w};
  }
  CheckedInt& operator+=(CheckedInt b) { return *this = *this + b; }
  CheckedInt& operator*=(CheckedInt b) { return *this = *this * b; }
  friend bool operator<(CheckedInt a, CheckedInt b) { return a.v_ < b.v_; }
  friend bool operator>(CheckedInt a, CheckedInt b) { return a.v_ > b.v_; }
  friend bool operator==(CheckedInt a, CheckedInt b) { return a.v_ == b.v_; }

 private:
  int64_t v_;
  const char* what_;
};

}  // namespace moe
