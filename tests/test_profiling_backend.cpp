// ProfilingBackend (lib/bench): forwards every op unchanged to the wrapped backend, and when
// enabled records per-op wall time and call counts that add up to op families.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "bench/profiling_backend.h"

namespace moe {
namespace {

TEST(ProfilingBackend, ForwardsResultsUnchanged) {
  auto cpu = make_backend("cpu", 1);
  ProfilingBackend prof(*cpu);
  Tensor x = prof.empty({3, 4}, DType::kF32), w = prof.empty({2, 4}, DType::kF32);
  prof.upload_vec<float>(x, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  prof.upload_vec<float>(w, {1, 0, -1, 0.5f, 2, 1, 0, -2});
  Tensor y1 = prof.empty({3, 2}, DType::kF32), y2 = cpu->empty({3, 2}, DType::kF32);
  prof.matmul_forward(y1, x, w, false);
  cpu->matmul_forward(y2, x, w, false);
  EXPECT_EQ(prof.download_vec<float>(y1), cpu->download_vec<float>(y2));
  EXPECT_EQ(prof.name(), cpu->name());
  EXPECT_EQ(prof.calls(OpKind::matmul_forward), 0) << "disabled profiling must not count";
}

TEST(ProfilingBackend, CountsCallsPerOpAndFamily) {
  auto cpu = make_backend("cpu", 1);
  ProfilingBackend prof(*cpu);
  Tensor a = prof.empty({1000}, DType::kF32), b = prof.empty({1000}, DType::kF32);
  prof.set_enabled(true);
  prof.fill(a, 1.5);
  prof.fill(b, 2.0);
  for (int i = 0; i < 3; ++i) prof.axpy(a, b, 0.5f);
  prof.set_enabled(false);
  prof.scale(a, 2.0f);  // not counted
  EXPECT_EQ(prof.calls(OpKind::fill), 2);
  EXPECT_EQ(prof.calls(OpKind::axpy), 3);
  EXPECT_EQ(prof.calls(OpKind::scale), 0);
  EXPECT_GE(prof.seconds(OpKind::axpy), 0.0);
  auto fam = prof.family_seconds();
  EXPECT_NEAR(fam["elementwise"],
              prof.seconds(OpKind::fill) + prof.seconds(OpKind::axpy), 1e-12);
  EXPECT_FLOAT_EQ(prof.download_vec<float>(a)[0], 2.0f * (1.5f + 3 * 0.5f * 2.0f));
  prof.reset();
  EXPECT_EQ(prof.calls(OpKind::axpy), 0);
}

TEST(ProfilingBackend, EveryOpHasAFamily) {
  for (OpKind op : all_ops())
    EXPECT_STRNE(op_family(op), "other") << op_name(op) << " has no family in op_family()";
}

TEST(ProfilingBackend, AnErrorInsideAnOpPropagates) {
  auto cpu = make_backend("cpu", 1);
  ProfilingBackend prof(*cpu);
  prof.set_enabled(true);
  Tensor a = prof.empty({4}, DType::kF32), b = prof.empty({5}, DType::kF32);
  EXPECT_THROW(prof.axpy(a, b, 1.0f), Error);  // size mismatch, raised by the CPU backend
}

}  // namespace
}  // namespace moe
