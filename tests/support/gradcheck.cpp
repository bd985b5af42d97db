// Implementation of the op-test support declared in gradcheck.h.
#include "support/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include <spdlog/fmt/fmt.h>

namespace moe::test {

// ---- Rng --------------------------------------------------------------------------------------
uint64_t Rng::next_u64() {  // splitmix64
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::uniform() {
  // 53 random bits, shifted by half a step so the result is never 0 or 1.
  return (static_cast<double>(next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double Rng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

double Rng::normal() {  // Box-Muller; uses one of the pair
  double u1 = uniform(), u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

int64_t Rng::below(int64_t n) {
  return static_cast<int64_t>(next_u64() % static_cast<uint64_t>(n));
}

std::vector<double> random_normal(size_t n, uint64_t seed, double stddev, double mean) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (auto& x : v) {
    do x = mean + stddev * rng.normal();
    while (x == 0.0);
  }
  return v;
}

std::vector<double> random_uniform(size_t n, uint64_t seed, double lo, double hi) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (auto& x : v) {
    do x = rng.uniform(lo, hi);
    while (x == 0.0);
  }
  return v;
}

std::vector<int32_t> random_ints(size_t n, int32_t hi, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(rng.below(hi));
  return v;
}

// ---- host <-> Tensor -------------------------------------------------------------------------
namespace {

uint16_t bf16_bits(float f) {  // round to nearest even, as the backends do
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float bf16_value(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

void upload_values(Backend& be, Tensor& t, const std::vector<double>& values) {
  MOE_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "upload_values: {} values into {}",
            values.size(), shape_str(t.shape()));
  switch (t.dtype()) {
    case DType::kF64: be.upload_vec(t, values); return;
    case DType::kF32: be.upload_vec(t, std::vector<float>(values.begin(), values.end())); return;
    case DType::kBF16: {
      std::vector<uint16_t> h(values.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = bf16_bits(static_cast<float>(values[i]));
      be.upload_vec(t, h);
      return;
    }
    case DType::kI32: {
      std::vector<int32_t> h(values.size());
      for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<int32_t>(values[i]);
      be.upload_vec(t, h);
      return;
    }
  }
}

Tensor to_tensor(Backend& be, const std::vector<double>& values, const Shape& shape,
                 DType dtype) {
  Tensor t = be.empty(shape, dtype);
  upload_values(be, t, values);
  return t;
}

Tensor to_tensor_i32(Backend& be, const std::vector<int32_t>& values, const Shape& shape) {
  Tensor t = be.empty(shape, DType::kI32);
  be.upload_vec(t, values);
  return t;
}

std::vector<double> to_host(Backend& be, const Tensor& t) {
  switch (t.dtype()) {
    case DType::kF64: return be.download_vec<double>(t);
    case DType::kF32: {
      auto h = be.download_vec<float>(t);
      return std::vector<double>(h.begin(), h.end());
    }
    case DType::kBF16: {
      auto h = be.download_vec<uint16_t>(t);
      std::vector<double> out(h.size());
      for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_value(h[i]);
      return out;
    }
    case DType::kI32: {
      auto h = be.download_vec<int32_t>(t);
      return std::vector<double>(h.begin(), h.end());
    }
  }
  return {};
}

std::vector<int32_t> to_host_i32(Backend& be, const Tensor& t) {
  MOE_CHECK(t.dtype() == DType::kI32, "to_host_i32: tensor holds {}", dtype_name(t.dtype()));
  return be.download_vec<int32_t>(t);
}

void poison(Backend& be, Tensor& t) {
  MOE_CHECK(t.dtype() != DType::kI32, "poison: i32 tensors have no NaN; fill them with -1");
  be.fill(t, std::numeric_limits<double>::quiet_NaN());
}

Tensor poisoned(Backend& be, const Shape& shape, DType dtype) {
  Tensor t = be.empty(shape, dtype);
  poison(be, t);
  return t;
}

// ---- comparisons ------------------------------------------------------------------------------
double nmse(const std::vector<double>& got, const std::vector<double>& want) {
  MOE_CHECK(got.size() == want.size(), "nmse: {} values against {}", got.size(), want.size());
  double err = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = got[i] - want[i];
    err += d * d;
    ref += want[i] * want[i];
  }
  return ref > 0.0 ? err / ref : err;
}

::testing::AssertionResult all_close(const std::vector<double>& got,
                                     const std::vector<double>& want, double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes differ: got " << got.size() << ", want "
                                         << want.size();
  }
  size_t failures = 0, worst = 0;
  double worst_excess = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < got.size(); ++i) {
    double diff = std::fabs(got[i] - want[i]);
    double excess = diff - (atol + rtol * std::fabs(want[i]));
    bool ok = std::isfinite(got[i]) && std::isfinite(want[i]) && excess <= 0.0;
    if (!ok) {
      if (failures == 0 || !(excess <= worst_excess)) {  // NaN excess counts as worst
        worst = i;
        worst_excess = std::isnan(excess) ? std::numeric_limits<double>::infinity() : excess;
      }
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << got.size() << " elements differ (atol " << atol << ", rtol "
         << rtol << "); worst at index " << worst << ": got "
         << fmt::format("{:.17g}", got[worst]) << ", want "
         << fmt::format("{:.17g}", want[worst]);
}

::testing::AssertionResult bitwise_equal(const std::vector<double>& got,
                                         const std::vector<double>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes differ: got " << got.size() << ", want "
                                         << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(double)) != 0 || std::isnan(got[i])) {
      return ::testing::AssertionFailure()
             << "first difference at index " << i << ": " << fmt::format("{:.17g}", got[i])
             << " vs " << fmt::format("{:.17g}", want[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<double> difference(const std::vector<double>& a, const std::vector<double>& b) {
  MOE_CHECK(a.size() == b.size(), "difference: {} values against {}", a.size(), b.size());
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

double RandomProjection::operator()(const std::vector<double>& out) const {
  MOE_CHECK(out.size() == r.size(), "RandomProjection: {} outputs, {} weights", out.size(),
            r.size());
  double s = 0.0;
  for (size_t i = 0; i < out.size(); ++i) s += r[i] * out[i];
  return s;
}

// ---- finite differences -----------------------------------------------------------------------
namespace {

std::vector<size_t> sample_coordinates(size_t n, size_t max_coords, uint64_t seed) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t{0});
  if (n <= max_coords) return idx;
  Rng rng(seed);
  for (size_t i = 0; i < max_coords; ++i) {  // partial Fisher-Yates
    size_t j = i + static_cast<size_t>(rng.below(static_cast<int64_t>(n - i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(max_coords);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

void expect_gradient_matches(const std::function<double()>& loss, std::vector<double>& x,
                             const std::vector<double>& analytic, const std::string& what,
                             GradcheckOptions opts) {
  ASSERT_EQ(x.size(), analytic.size()) << what << ": analytic gradient has the wrong size";
  ASSERT_FALSE(x.empty()) << what << ": nothing to check";
  size_t failures = 0, worst = 0, checked = 0;
  double worst_excess = -std::numeric_limits<double>::infinity(), worst_fd = 0.0;
  for (size_t i : sample_coordinates(x.size(), opts.max_coords, opts.seed)) {
    double saved = x[i];
    x[i] = saved + opts.eps;
    double up = loss();
    x[i] = saved - opts.eps;
    double down = loss();
    x[i] = saved;
    double fd = (up - down) / (2.0 * opts.eps);
    double excess = std::fabs(fd - analytic[i]) - (opts.atol + opts.rtol * std::fabs(fd));
    if (std::isnan(excess)) excess = std::numeric_limits<double>::infinity();
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
      worst_fd = fd;
    }
    if (excess > 0.0) ++failures;
    ++checked;
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << checked
                          << " checked coordinates disagree with finite differences (atol "
                          << opts.atol << ", rtol " << opts.rtol << ", eps " << opts.eps
                          << "); worst at index " << worst << ": finite difference "
                          << fmt::format("{:.12g}", worst_fd) << ", analytic "
                          << fmt::format("{:.12g}", analytic[worst]);
}

}  // namespace moe::test
