// CpuBackend memory and elementwise ops (empty, upload/download, copy, fill, convert, add,
// axpy, scale), bf16 rounding on known values, and self-tests of the gradcheck support.
#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace moe {
namespace {

using test::all_close;
using test::to_host;
using test::to_tensor;

TEST(CpuMemory, EmptyIsAlignedAndSized) {
  CpuBackend be(1);
  for (int64_t n : {0, 1, 3, 67, 1000}) {
    Tensor t = be.empty({n, 3}, DType::kF32);
    EXPECT_TRUE(t.defined());
    EXPECT_EQ(t.numel(), n * 3);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  }
  EXPECT_THROW(be.empty({-1}, DType::kF32), Error);
}

TEST(CpuMemory, UploadDownloadCopyRoundTrip) {
  CpuBackend be(2);
  std::vector<double> v = test::random_normal(37, 1);
  Tensor a = to_tensor(be, v, {37}, DType::kF64);
  Tensor b = test::poisoned(be, {37}, DType::kF64);
  be.copy(b, a);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, b), v));
  Tensor wrong = be.empty({36}, DType::kF64);
  EXPECT_THROW(be.copy(wrong, a), Error);
  Tensor other = be.empty({37}, DType::kF32);
  EXPECT_THROW(be.copy(other, a), Error);
  std::vector<double> small(3);
  EXPECT_THROW(be.download(small.data(), a, small.size() * sizeof(double)), Error);
}

TEST(CpuMemory, FillEveryDtype) {
  CpuBackend be(2);
  Tensor f = be.empty({5, 7}, DType::kF32);
  be.fill(f, 1.5);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, f), std::vector<double>(35, 1.5)));
  Tensor i = be.empty({9}, DType::kI32);
  be.fill(i, -3);
  EXPECT_EQ(test::to_host_i32(be, i), std::vector<int32_t>(9, -3));
  Tensor h = be.empty({4}, DType::kBF16);
  be.fill(h, 0.1);  // 0.1f = 0x3DCCCCCD -> bf16 0x3DCD = 0.10009765625
  EXPECT_TRUE(test::bitwise_equal(to_host(be, h), std::vector<double>(4, 0.10009765625)));
  Tensor z = be.zeros({3}, DType::kF64);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, z), std::vector<double>(3, 0.0)));
}

// Known f32 -> bf16 roundings: bf16 keeps 8 significant bits, ties go to the even mantissa.
TEST(CpuMemory, ConvertBf16RoundsToNearestEven) {
  CpuBackend be(1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  // Expected values from torch.tensor(v, dtype=float32).to(bfloat16).
  std::vector<double> in = {
      1.0,
      1.0 + 1.0 / 256,         // exactly halfway between 1 and 1 + 2^-7: tie -> even (1.0)
      1.0 + 3.0 / 256,         // halfway between 1 + 2^-7 (odd) and 1 + 2^-6: tie -> 1 + 2^-6
      1.0 + 1.0 / 256 + 1e-6,  // just above halfway -> rounds up
      -2.5,
      3.0e38,
      3.39e38,                 // rounds down to the largest finite bf16
      3.3961775292304e38,      // at the tie above the largest finite bf16 -> inf
      1e-40,                   // f32 subnormal
      inf,
      -inf,
  };
  std::vector<double> want = {
      1.0, 1.0, 1.0 + 1.0 / 64, 1.0 + 1.0 / 128, -2.5, std::ldexp(0x1.c4p0, 127),
      std::ldexp(0x1.fep0, 127), inf, std::ldexp(1.0, -133), inf, -inf,
  };
  Tensor x = to_tensor(be, in, {static_cast<int64_t>(in.size())}, DType::kF32);
  Tensor y = be.empty(x.shape(), DType::kBF16);
  be.convert(y, x);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, y), want));
  // NaN stays NaN.
  Tensor xn = to_tensor(be, {nan}, {1}, DType::kF32);
  Tensor yn = be.empty({1}, DType::kBF16);
  be.convert(yn, xn);
  EXPECT_TRUE(std::isnan(to_host(be, yn)[0]));
}

// f64 -> bf16 rounds once: a value just above a bf16 tie whose f32 rounding lands exactly on
// the tie must still round up (a plain f64 -> f32 -> bf16 chain would round to even, down).
TEST(CpuMemory, ConvertF64ToBf16RoundsOnce) {
  CpuBackend be(1);
  std::vector<double> in = {1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30),
                            -(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)),
                            1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8), 0.1};
  std::vector<double> want = {1.0 + std::ldexp(1.0, -7), -(1.0 + std::ldexp(1.0, -7)), 1.0,
                              1.0 + std::ldexp(1.0, -6), 0.10009765625};
  Tensor x = to_tensor(be, in, {5}, DType::kF64);
  Tensor y = be.empty({5}, DType::kBF16);
  be.convert(y, x);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, y), want));
  Tensor ints = be.empty({5}, DType::kI32);
  EXPECT_THROW(be.convert(ints, x), Error);
  Tensor counts = test::to_tensor_i32(be, {3, -2, 0, 7, 1}, {5});
  Tensor as_float = be.empty({5}, DType::kF32);
  be.convert(as_float, counts);
  EXPECT_TRUE(test::bitwise_equal(to_host(be, as_float), {3, -2, 0, 7, 1}));
}

TEST(CpuMemory, ConvertRoundTripsBetweenFloatTypes) {
  CpuBackend be(2);
  std::vector<double> v = test::random_normal(101, 3);
  Tensor d = to_tensor(be, v, {101}, DType::kF64);
  Tensor f = be.empty({101}, DType::kF32);
  Tensor h = be.empty({101}, DType::kBF16);
  Tensor back = be.empty({101}, DType::kF64);
  be.convert(f, d);
  be.convert(h, f);
  be.convert(back, h);
  std::vector<double> got = to_host(be, back);
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_NEAR(got[i], v[i], std::fabs(v[i]) * (1.0 / 256)) << i;  // bf16: 8 significant bits
  }
  be.convert(back, f);
  std::vector<double> from_f32 = to_host(be, back);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(from_f32[i], double(float(v[i])));
  Tensor wrong = be.empty({100}, DType::kF32);
  EXPECT_THROW(be.convert(wrong, d), Error);
}

TEST(CpuMemory, AddAxpyScale) {
  CpuBackend be(2);
  for (DType dt : {DType::kF32, DType::kF64}) {
    std::vector<double> a = test::random_normal(67, 4), b = test::random_normal(67, 5);
    Tensor ta = to_tensor(be, a, {67}, dt), tb = to_tensor(be, b, {67}, dt);
    Tensor y = test::poisoned(be, {67}, dt);
    be.add(y, ta, tb);
    std::vector<double> want(67);
    for (int i = 0; i < 67; ++i) want[i] = a[i] + b[i];
    EXPECT_TRUE(all_close(to_host(be, y), want, 1e-6, 1e-6));
    be.add(ta, ta, tb);  // y may alias a
    EXPECT_TRUE(all_close(to_host(be, ta), want, 1e-6, 1e-6));
    be.axpy(y, tb, -0.5f);
    for (int i = 0; i < 67; ++i) want[i] += -0.5 * b[i];
    EXPECT_TRUE(all_close(to_host(be, y), want, 1e-6, 1e-6));
    be.scale(y, 3.0f);
    for (int i = 0; i < 67; ++i) want[i] *= 3.0;
    EXPECT_TRUE(all_close(to_host(be, y), want, 1e-5, 1e-6));
  }
  Tensor i32 = be.empty({3}, DType::kI32);
  EXPECT_THROW(be.scale(i32, 2.0f), Error);
  Tensor f = be.empty({3}, DType::kF32), d = be.empty({3}, DType::kF64);
  EXPECT_THROW(be.axpy(f, d, 1.0f), Error);
}

TEST(CpuMemory, SupportsF32F64EverywhereAndBf16ForConvertAndFill) {
  CpuBackend be(1);
  for (OpKind op : all_ops()) {
    EXPECT_TRUE(be.supports(op, DType::kF32)) << op_name(op);
    EXPECT_TRUE(be.supports(op, DType::kF64)) << op_name(op);
    bool lowp = op == OpKind::convert || op == OpKind::fill;
    EXPECT_EQ(be.supports(op, DType::kBF16), lowp) << op_name(op);
  }
}

// ---- the test support itself ---------------------------------------------------------------

TEST(Gradcheck, AcceptsACorrectGradient) {
  std::vector<double> x = test::random_normal(50, 11);
  auto loss = [&] {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += std::sin(x[i]) * (i + 1);
    return s;
  };
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = std::cos(x[i]) * (i + 1);
  test::expect_gradient_matches(loss, x, g, "sin");
}

TEST(Gradcheck, RejectsAWrongGradientAndNamesTheCoordinate) {
  std::vector<double> x = test::random_normal(5000, 12);
  auto loss = [&] {
    double s = 0;
    for (double v : x) s += v * v;
    return s;
  };
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = 2 * x[i];
  // Corrupt every coordinate by a relative 1e-3: whatever the sample, it must fail.
  for (double& v : g) v *= 1.001;
  EXPECT_NONFATAL_FAILURE(test::expect_gradient_matches(loss, x, g, "square"),
                          "square: 2000 of 2000 checked coordinates disagree");
}

TEST(Gradcheck, RandomDataIsSeededAndNonZero) {
  EXPECT_EQ(test::random_normal(100, 5), test::random_normal(100, 5));
  EXPECT_NE(test::random_normal(100, 5), test::random_normal(100, 6));
  for (double v : test::random_uniform(1000, 9, -1, 1)) {
    EXPECT_NE(v, 0.0);
    EXPECT_GT(v, -1.0);
    EXPECT_LT(v, 1.0);
  }
  EXPECT_FALSE(all_close({1.0, std::nan("")}, {1.0, 2.0}, 1, 1));
  EXPECT_TRUE(std::isnan(test::nmse({std::nan("")}, {1.0})));
}

}  // namespace
}  // namespace moe
