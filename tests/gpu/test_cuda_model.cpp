// Whole model on CUDA against the CPU: one training step (losses and every parameter gradient)
// for each loss combination, in f32 and with bf16 activations; and a 200-step training run whose
// loss curve must follow the CPU's.
//
// Tolerances: f32 losses within 1e-4 relative, gradients within 2e-3 relative L2 error per
// parameter; bf16 losses within 2e-2 relative, gradients within 8e-2 relative L2 error (bf16
// activations carry 8 mantissa bits), on a batch whose top-k expert sets agree with the CPU's
// (a bf16 near-tie may route a token elsewhere; see one_step_matches). The 200-step curve: every 10th loss within 1e-3 (f32) of
// the CPU's; bf16 every 10th loss to step 60 within 3e-2, then the mean of the last five within
// 10% (see the test: the memorising phase is chaotic).
//
// Without a CUDA device every test is SKIPPED with a message, never passed.
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "gpu/model_harness.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace moe {
namespace {

void expect_loss_close(double got, double ref, double rtol, const std::string& what) {
  EXPECT_TRUE(std::isfinite(got)) << what;
  EXPECT_LE(std::fabs(got - ref), rtol * std::max(std::fabs(ref), 1e-3))
      << what << ": cuda " << got << " vs cpu " << ref;
}

void one_step_matches(DType dtype, const std::vector<std::string>& losses,
                      const std::string& arch) {
  const bool bf16 = dtype == DType::kBF16;
  Config c = small_config(losses, arch);
  // bf16 rounds the router's input, so a token within ~1e-3 of a top-k tie can pick another
  // expert than in the f32 CPU model (about 1 token-layer in 70 here); the gradients of the
  // experts involved then differ by tens of percent, legitimately. The gradients are therefore
  // compared on the first batch whose routing agrees everywhere; one sequence keeps the odds of
  // such a batch high (a wrong bf16 path would route differently on every batch and fail).
  if (bf16) c.train.batch_size = 1;
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");
  MoeModel ref(c.model, c.loss, *cpu, c.train.batch_size, c.train.seq_len, DType::kF32);
  MoeModel dev(c.model, c.loss, *gpu, c.train.batch_size, c.train.seq_len, dtype);
  ref.init_parameters(7);
  dev.init_parameters(7);
  constexpr int kBatchTries = 30;
  bool routed_alike = false;
  int tries = 0;
  while (!routed_alike && tries < kBatchTries) {
    const Batch b = make_batch(c, 11 + static_cast<uint64_t>(tries++));
    for (MoeModel* m : {&ref, &dev}) {
      m->zero_grad();
      m->forward(b, true);
    }
    routed_alike = same_expert_sets(ref, dev);
  }
  ASSERT_TRUE(routed_alike) << "none of " << kBatchTries << " batches routes every token to the "
                            << "same experts on cuda (" << dtype_name(dtype) << ") and cpu";
  if (!bf16) {
    EXPECT_EQ(tries, 1) << "f32 routing should agree with the CPU on the first batch";
  }
  for (MoeModel* m : {&ref, &dev}) m->backward(1.0f);
  const double loss_tol = bf16 ? 2e-2 : 1e-4, grad_tol = bf16 ? 8e-2 : 2e-3;
  LossValues lr = ref.loss_values(), ld = dev.loss_values();
  const std::string tag = arch + " " + dtype_name(dtype);
  expect_loss_close(ld.lm, lr.lm, loss_tol, tag + " lm");
  expect_loss_close(ld.total, lr.total, loss_tol, tag + " total");
  expect_loss_close(ld.lb, lr.lb, loss_tol, tag + " lb");
  expect_loss_close(ld.sp, lr.sp, bf16 ? 5e-2 : 1e-3, tag + " sp");
  expect_loss_close(ld.cp, lr.cp, loss_tol, tag + " cp");
  for (size_t i = 0; i < ref.params().size(); ++i) {
    const Param& pr = ref.params()[i];
    const Param& pd = dev.params()[i];
    ASSERT_EQ(pr.name, pd.name);
    if (!pr.trainable) continue;
    std::vector<float> gr = cpu->download_vec<float>(pr.grad), gd = gpu->download_vec<float>(pd.grad);
    double err = relative_l2(gd, gr);
    EXPECT_LE(err, grad_tol) << tag << " gradient of " << pr.name;
  }
}

TEST(CudaModel, OneStepF32MatchesCpuAllLosses) {
  REQUIRE_CUDA();
  one_step_matches(DType::kF32, {"lb", "sp", "cp", "z"}, "vanilla");
  one_step_matches(DType::kF32, {"lb", "sp", "cp", "z"}, "deepseek");
}

TEST(CudaModel, OneStepBf16MatchesCpuAllLosses) {
  REQUIRE_CUDA();
  one_step_matches(DType::kBF16, {"lb", "sp", "cp", "z"}, "vanilla");
  one_step_matches(DType::kBF16, {"lb"}, "deepseek");
}

// train.recompute re-runs each layer's forward inside backward; with deterministic kernels the
// gradients must be bitwise those of the plain run (and a second plain run must repeat them).
TEST(CudaModel, RecomputeAndRepeatGiveBitwiseTheSameGradients) {
  REQUIRE_CUDA();
  const Config c = small_config({"lb", "sp", "cp", "z"}, "deepseek");
  auto gpu = make_backend("cuda");
  const Batch b = make_batch(c, 13);
  std::vector<std::vector<float>> first;
  for (bool recompute : {false, false, true}) {
    MoeModel m(c.model, c.loss, *gpu, c.train.batch_size, c.train.seq_len, DType::kBF16,
               recompute);
    m.init_parameters(5);
    m.zero_grad();
    m.forward(b, true);
    m.backward(1.0f);
    std::vector<std::vector<float>> grads;
    for (const Param& p : m.params())
      if (p.trainable) grads.push_back(gpu->download_vec<float>(p.grad));
    if (first.empty()) {
      first = grads;
      continue;
    }
    ASSERT_EQ(grads.size(), first.size());
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_EQ(grads[i], first[i]) << (recompute ? "recompute" : "repeat")
                                    << ": gradient " << i << " differs bitwise";
  }
}

std::vector<double> train_curve(Backend& be, DType dtype, const Config& c, int steps) {
  MoeModel model(c.model, c.loss, be, c.train.batch_size, c.train.seq_len, dtype);
  model.init_parameters(3);
  AdamW opt(be, model.params(), c.train);
  std::vector<double> curve;
  for (int s = 1; s <= steps; ++s) {
    const Batch b = make_batch(c, 100 + static_cast<uint64_t>(s % 8));  // 8 batches, cycled
    model.zero_grad();
    model.forward(b, true);
    model.backward(1.0f);
    const double norm = opt.grad_norm();
    opt.step(s, 3e-3, AdamW::clip_scale(norm, c.train.grad_clip));
    if (s % 10 == 0) curve.push_back(model.loss_values().total);
  }
  return curve;
}

TEST(CudaModel, TwoHundredStepsFollowTheCpuLossCurve) {
  REQUIRE_CUDA();
  const Config c = small_config({"lb", "sp", "cp"}, "vanilla");
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");
  const std::vector<double> ref = train_curve(*cpu, DType::kF32, c, 200);
  auto tail_mean = [](const std::vector<double>& x) {  // the last five logged losses
    double sum = 0;
    for (size_t i = x.size() - 5; i < x.size(); ++i) sum += x[i];
    return sum / 5;
  };
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::vector<double> got = train_curve(*gpu, dtype, c, 200);
    ASSERT_EQ(got.size(), ref.size());
    const bool bf16 = dtype == DType::kBF16;
    // f32 follows the CPU step by step for all 200 steps. bf16 does for the first 60; after that
    // this tiny model memorises its batches (loss 3 -> 0.2), where a rounding-level difference
    // flips a routing near-tie and the two trajectories part step by step (on an H200: 17% at
    // step 70, 0.287 vs 0.375 at step 190). What must hold there is that bf16 learns as the CPU
    // does: the mean of the last five logged losses within 10% (H200: 0.310 vs 0.311).
    const size_t stepwise = bf16 ? 6 : ref.size();
    for (size_t i = 0; i < stepwise; ++i)
      expect_loss_close(got[i], ref[i], bf16 ? 3e-2 : 1e-3,
                        std::string(dtype_name(dtype)) + " step " + std::to_string(10 * (i + 1)));
    if (bf16) expect_loss_close(tail_mean(got), tail_mean(ref), 0.1, "bf16 steps 160-200 mean");
    EXPECT_LT(ref.back(), ref.front()) << "the CPU run itself should learn";
  }
}

}  // namespace
}  // namespace moe
