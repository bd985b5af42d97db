// core/checked.h: exact size arithmetic (issue 11, item 5). Overflow is a usage error (exit 2)
// whose message names what was being computed; results that fit are exact.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <memory>

#include "core/checked.h"
#include "core/tensor.h"

namespace moe {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

std::string usage_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(Checked, ExactResultsPassThrough) {
  EXPECT_EQ(checked_mul<int64_t>(int64_t{1} << 31, int64_t{1} << 31, "x"), int64_t{1} << 62);
  EXPECT_EQ(checked_add<int64_t>(kMax - 1, 1, "x"), kMax);
  EXPECT_EQ(checked_mul<uint64_t>(uint64_t{1} << 63, 1, "x"), uint64_t{1} << 63);
  EXPECT_EQ(checked_numel({3, 4, 5}, "x"), 60);
  EXPECT_EQ(checked_numel({}, "x"), 1);
  EXPECT_EQ(checked_numel({0, kMax}, "x"), 0);
  EXPECT_EQ((checked_cast<int, int64_t>(1024, "train.threads")), 1024);
  const CheckedInt a{int64_t{1} << 40, "a formula"};
  EXPECT_EQ((a * 2 + 3 - 1).value(), (int64_t{1} << 41) + 2);
}

TEST(Checked, OverflowNamesWhat) {
  std::string msg = usage_error_of([] { checked_mul<int64_t>(int64_t{1} << 62, 2, "model.d_model"); });
  EXPECT_NE(msg.find("model.d_model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
  msg = usage_error_of([] { checked_add<int64_t>(kMax, 1, "loader position"); });
  EXPECT_NE(msg.find("loader position"), std::string::npos) << msg;
  msg = usage_error_of([] { checked_mul<uint64_t>(uint64_t{1} << 62, 4, "tensor \"w\""); });
  EXPECT_NE(msg.find("tensor \"w\""), std::string::npos) << msg;
  msg = usage_error_of([] { checked_numel({int64_t{1} << 32, int64_t{1} << 32}, "shape of w"); });
  EXPECT_NE(msg.find("shape of w"), std::string::npos) << msg;
  msg = usage_error_of([] { checked_numel({2, -3}, "shape of v"); });
  EXPECT_NE(msg.find("non-negative"), std::string::npos) << msg;
  msg = usage_error_of([] { checked_cast<int, int64_t>(int64_t{1} << 40, "train.threads"); });
  EXPECT_NE(msg.find("train.threads"), std::string::npos) << msg;
  msg = usage_error_of([] {
    const CheckedInt d{int64_t{1} << 40, "the parameter count"};
    (void)(3 * d * d);
  });
  EXPECT_NE(msg.find("the parameter count"), std::string::npos) << msg;
  msg = usage_error_of([] { (void)(CheckedInt{-kMax, "a difference"} - CheckedInt{2}); });
  EXPECT_NE(msg.find("a difference"), std::string::npos) << msg;
}

TEST(Checked, TensorShapesAreExact) {
  // A view whose shape count would wrap is refused, not sized modulo 2^64.
  Tensor t;
  std::string msg = usage_error_of([] {
    Tensor view(std::shared_ptr<void>(new char[1], [](void* p) { delete[] static_cast<char*>(p); }),
                nullptr, {int64_t{1} << 40, int64_t{1} << 40}, DType::kF32, Device::kCpu);
    (void)view.numel();
  });
  EXPECT_NE(msg.find("[1099511627776, 1099511627776]"), std::string::npos) << msg;
  msg = usage_error_of([] {
    Tensor view(std::shared_ptr<void>(new char[1], [](void* p) { delete[] static_cast<char*>(p); }),
                nullptr, {int64_t{1} << 62}, DType::kF64, Device::kCpu);
    (void)view.nbytes();
  });
  EXPECT_NE(msg.find("tensor bytes"), std::string::npos) << msg;
}

}  // namespace
}  // namespace moe
