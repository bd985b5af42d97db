// The cuDNN attention path (train.attention: cudnn, kernels/cudnn_attention.cpp) against the CPU
// reference: attention forward and backward and the KV-cache forward, bf16 (cuDNN's fused
// attention has no fp32 path), random non-zero inputs, NaN-poisoned outputs, at the shapes the
// native kernel is tested at in test_cuda_ops.cpp: T = 1 (served by the native kernels: cuDNN 9
// refuses s_q = s_kv = 1), T not a multiple of any tile (19, 45,
// 67, 1030), GQA (H / KV = 2 and 3), head_dim 8 to 128, and the KV-cache prefix (rows sharing a
// prefix, a row without one, a prefix further down the cache, T = 1 and T = 20). Tolerances:
// tests/gpu/op_harness.h (bf16).
//
// Without a CUDA device every test here is SKIPPED with a message, never counted as passed. On a
// GPU, a build without the cuDNN path (MOE_WITH_CUDNN off) FAILS these tests with the backend's
// usage error rather than skipping them, so a bundle that lost cuDNN cannot pass as green.
#include <algorithm>
#include <string>
#include <vector>

#include "gpu/op_harness.h"

namespace moe::test {
namespace {

bool has_cuda() {
  auto b = available_backends();
  return std::find(b.begin(), b.end(), "cuda") != b.end();
}

std::string tag_of(const char* what, const AttnDims& d) {
  return std::string(what) + " B" + std::to_string(d.batch) + " T" + std::to_string(d.seq) +
         " H" + std::to_string(d.heads) + " KV" + std::to_string(d.kv_heads) + " hd" +
         std::to_string(d.head_dim);
}

class CudnnAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_cuda())
      GTEST_SKIP() << "no CUDA device on this machine: the cuDNN attention test is skipped, not "
                      "passed";
    cpu_ = make_backend("cpu");
    gpu_ = make_backend("cuda");
    gpu_->set_attention_impl(AttentionImpl::kCudnn);  // a usage error if cuDNN is not built
  }
  std::unique_ptr<Backend> cpu_, gpu_;
};

void attention_shape(OpHarness& h, const AttnDims& d) {
  const std::string tag = tag_of("cudnn attention", d);
  const int64_t rows = d.batch * d.seq;
  Pair q = h.act_input({rows, d.heads * d.head_dim});
  Pair k = h.act_input({rows, d.kv_heads * d.head_dim});
  Pair v = h.act_input({rows, d.kv_heads * d.head_dim});
  Pair out = h.output({rows, d.heads * d.head_dim}, h.act());
  Pair lse = h.output({d.batch, d.heads, d.seq}, DType::kF32);
  h.cpu().attention_forward(out.cpu, lse.cpu, q.cpu, k.cpu, v.cpu, d);
  h.gpu().attention_forward(out.gpu, lse.gpu, q.gpu, k.gpu, v.gpu, d);
  h.expect_close(out, tag + " forward out");
  h.expect_close(lse, tag + " forward lse", tolerance_for(h.act()));
  // Backward from the CPU's saved tensors, so both sides differentiate the same forward (this
  // also checks that cuDNN reads the project's lse convention: natural-log log-sum-exp of the
  // scaled scores).
  Pair out_saved = h.share(out.cpu, h.act()), lse_saved = h.share(lse.cpu, DType::kF32);
  Pair dout = h.act_input({rows, d.heads * d.head_dim});
  Pair dq = h.output(q.cpu.shape(), h.act()), dk = h.output(k.cpu.shape(), h.act());
  Pair dv = h.output(v.cpu.shape(), h.act());
  h.cpu().attention_backward(dq.cpu, dk.cpu, dv.cpu, dout.cpu, q.cpu, k.cpu, v.cpu,
                             out_saved.cpu, lse_saved.cpu, d);
  h.gpu().attention_backward(dq.gpu, dk.gpu, dv.gpu, dout.gpu, q.gpu, k.gpu, v.gpu,
                             out_saved.gpu, lse_saved.gpu, d);
  h.expect_close(dq, tag + " backward dq");
  h.expect_close(dk, tag + " backward dk");
  h.expect_close(dv, tag + " backward dv");
}

TEST_F(CudnnAttention, ForwardBackwardMatchCpuReference) {
  OpHarness h(*cpu_, *gpu_, DType::kBF16, 4242u);
  attention_shape(h, {2, 67, 4, 2, 32});
  attention_shape(h, {1, 45, 2, 2, 128});
  attention_shape(h, {1, 19, 3, 1, 24});   // GQA group of 3
  attention_shape(h, {3, 1, 2, 2, 8});     // T = 1: one key per query
  attention_shape(h, {1, 1030, 2, 1, 64});  // T >= 1024, not a multiple of any tile
  gpu_->synchronize();
}

// The same shape twice reuses its plan; a new shape in between must not disturb it.
TEST_F(CudnnAttention, RepeatedShapesGiveTheSameResults) {
  OpHarness h(*cpu_, *gpu_, DType::kBF16, 17u);
  attention_shape(h, {2, 67, 4, 2, 32});
  attention_shape(h, {3, 1, 2, 2, 8});
  attention_shape(h, {2, 67, 4, 2, 32});
  gpu_->synchronize();
}

// The project's determinism rule (docs/training.md): the same inputs give bit-identical
// gradients. The backward graph asks cuDNN for its deterministic algorithm and rejects engines
// flagged nondeterministic; this checks it on the device, at the CudaDeterminism shape.
TEST_F(CudnnAttention, BackwardRepeatsBitwise) {
  OpHarness h(*cpu_, *gpu_, DType::kBF16, 99u);
  Backend& g = *gpu_;
  const AttnDims d{2, 300, 4, 2, 64};
  Pair q = h.act_input({600, 256}), k = h.act_input({600, 128}), v = h.act_input({600, 128});
  Pair dout = h.act_input({600, 256});
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    Tensor o = g.empty({600, 256}, DType::kBF16), lse = g.empty({2, 4, 300}, DType::kF32);
    Tensor dq = g.empty({600, 256}, DType::kBF16), dk = g.empty({600, 128}, DType::kBF16);
    Tensor dv = g.empty({600, 128}, DType::kBF16);
    g.attention_forward(o, lse, q.gpu, k.gpu, v.gpu, d);
    g.attention_backward(dq, dk, dv, dout.gpu, q.gpu, k.gpu, v.gpu, o, lse, d);
    std::vector<float> all;
    for (const Tensor* t : {&o, &lse, &dq, &dk, &dv}) {
      std::vector<float> x = h.gpu_values(*t);
      all.insert(all.end(), x.begin(), x.end());
    }
    if (run == 0) first = all;
    else EXPECT_EQ(first, all) << "cuDNN attention run " << run << " differs from run 0";
  }
}

// The KV-cache forward: rows 0 and 1 continue the same 70-token prefix (crossing tiles), row 2
// has none, row 3 continues a 33-token prefix further down the cache; with the host's bound on
// the prefix lengths (as lib/model passes it) and without one (the whole cache bounds it).
TEST_F(CudnnAttention, KvCacheForwardMatchesCpuReference) {
  OpHarness h(*cpu_, *gpu_, DType::kBF16, 555u);
  const int64_t heads = 4, kv_heads = 2;
  for (int64_t hd : {32, 128}) {
    for (int64_t t : {1, 20}) {
      for (int64_t bound : {int64_t(70), int64_t(-1)}) {
        AttnDims d{4, t, heads, kv_heads, hd};
        d.cache_len_max = bound;
        const std::string tag = tag_of("cudnn kv_cache", d) + " bound " + std::to_string(bound);
        const int64_t rows = 4 * t, cache_rows = 120;
        Pair q = h.act_input({rows, heads * hd});
        Pair k = h.act_input({rows, kv_heads * hd}), v = h.act_input({rows, kv_heads * hd});
        Pair kc = h.act_input({cache_rows, kv_heads * hd});
        Pair vc = h.act_input({cache_rows, kv_heads * hd});
        Pair start = h.i32_input({4}, {10, 10, 0, 87}), len = h.i32_input({4}, {70, 70, 0, 33});
        Pair out = h.output({rows, heads * hd}, h.act());
        h.cpu().attention_forward_cached(out.cpu, q.cpu, k.cpu, v.cpu, kc.cpu, vc.cpu,
                                         start.cpu, len.cpu, d);
        h.gpu().attention_forward_cached(out.gpu, q.gpu, k.gpu, v.gpu, kc.gpu, vc.gpu,
                                         start.gpu, len.gpu, d);
        h.expect_close(out, tag + " out");
      }
    }
  }
  gpu_->synchronize();
}

// A prefix longer than the host's bound is bad input found on the device (no read past the
// gathered keys), reported at the next synchronisation.
TEST_F(CudnnAttention, KvCachePrefixAboveTheBoundIsADeviceError) {
  OpHarness h(*cpu_, *gpu_, DType::kBF16, 7u);
  AttnDims d{1, 3, 2, 1, 16};
  d.cache_len_max = 4;
  Pair q = h.act_input({3, 32}), k = h.act_input({3, 16}), v = h.act_input({3, 16});
  Pair kc = h.act_input({100, 16}), vc = h.act_input({100, 16});
  Pair start = h.i32_input({1}, {0}), len = h.i32_input({1}, {90});  // 90 > bound 4 (+ 64 pad)
  Tensor out = gpu_->empty({3, 32}, DType::kBF16);
  // The error surfaces at the op itself under MOE_DEBUG_SYNC=1, else at the synchronisation.
  try {
    gpu_->attention_forward_cached(out, q.gpu, k.gpu, v.gpu, kc.gpu, vc.gpu, start.gpu, len.gpu,
                                   d);
    gpu_->synchronize();
    ADD_FAILURE() << "expected a device input error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV-cache span"), std::string::npos) << e.what();
  }
}

// What cuDNN cannot run is a usage error naming the reason, never a silent native fallback.
TEST_F(CudnnAttention, UnsupportedCallsAreUsageErrors) {
  OpHarness h(*cpu_, *gpu_, DType::kF32, 3u);
  EXPECT_FALSE(gpu_->supports(OpKind::attention_forward, DType::kF32));
  EXPECT_TRUE(gpu_->supports(OpKind::attention_backward, DType::kBF16));
  const AttnDims d{1, 5, 2, 1, 16};
  Pair q = h.act_input({5, 32}), k = h.act_input({5, 16}), v = h.act_input({5, 16});
  Tensor out = gpu_->empty({5, 32}, DType::kF32), lse = gpu_->empty({1, 2, 5}, DType::kF32);
  try {
    gpu_->attention_forward(out, lse, q.gpu, k.gpu, v.gpu, d);
    ADD_FAILURE() << "expected a usage error for f32 on cuDNN";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
  OpHarness hb(*cpu_, *gpu_, DType::kBF16, 4u);
  const AttnDims odd{1, 5, 2, 1, 12};  // head_dim not a multiple of 8
  Pair qb = hb.act_input({5, 24}), kb = hb.act_input({5, 12}), vb = hb.act_input({5, 12});
  Tensor outb = gpu_->empty({5, 24}, DType::kBF16);
  try {
    gpu_->attention_forward(outb, lse, qb.gpu, kb.gpu, vb.gpu, odd);
    ADD_FAILURE() << "expected a usage error for head_dim 12 on cuDNN";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    EXPECT_NE(std::string(e.what()).find("multiple of 8"), std::string::npos) << e.what();
  }
  // Back to native: the same f32 call runs.
  gpu_->set_attention_impl(AttentionImpl::kNative);
  gpu_->attention_forward(out, lse, q.gpu, k.gpu, v.gpu, d);
  gpu_->synchronize();
}

// auto: f32 attention, which cuDNN cannot run, runs the native kernels.
TEST(CudnnAttentionAuto, F32RunsNative) {
  if (!has_cuda()) GTEST_SKIP() << "no CUDA device on this machine: skipped, not passed";
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");
  gpu->set_attention_impl(AttentionImpl::kAuto);
  EXPECT_TRUE(gpu->supports(OpKind::attention_forward, DType::kF32));
  OpHarness h(*cpu, *gpu, DType::kF32, 11u);
  const AttnDims d{1, 19, 3, 1, 24};
  Pair q = h.act_input({19, 72}), k = h.act_input({19, 24}), v = h.act_input({19, 24});
  Pair out = h.output({19, 72}, DType::kF32), lse = h.output({1, 3, 19}, DType::kF32);
  h.cpu().attention_forward(out.cpu, lse.cpu, q.cpu, k.cpu, v.cpu, d);
  h.gpu().attention_forward(out.gpu, lse.gpu, q.gpu, k.gpu, v.gpu, d);
  h.expect_close(out, "auto attention out");
}

// auto: bf16 training attention runs cuDNN (since it passed on a GPU: docs/gpu.md). Its forward
// and backward equal an explicit train.attention: cudnn backend's bit for bit, which the native
// kernels would not (another summation order), and T = 1 runs native under both.
TEST(CudnnAttentionAuto, Bf16RunsCudnn) {
  if (!has_cuda()) GTEST_SKIP() << "no CUDA device on this machine: skipped, not passed";
  auto cpu = make_backend("cpu");
  auto autob = make_backend("cuda");
  auto cudnn = make_backend("cuda");
  auto native = make_backend("cuda");
  autob->set_attention_impl(AttentionImpl::kAuto);
  cudnn->set_attention_impl(AttentionImpl::kCudnn);
  native->set_attention_impl(AttentionImpl::kNative);
  OpHarness h(*cpu, *autob, DType::kBF16, 23u);
  for (const AttnDims d : {AttnDims{2, 67, 4, 2, 32}, AttnDims{3, 1, 2, 2, 8}}) {
    const int64_t rows = d.batch * d.seq;
    Pair q = h.act_input({rows, d.heads * d.head_dim});
    Pair k = h.act_input({rows, d.kv_heads * d.head_dim});
    Pair v = h.act_input({rows, d.kv_heads * d.head_dim});
    Pair dout = h.act_input({rows, d.heads * d.head_dim});
    std::vector<std::vector<float>> results;
    for (Backend* g : {autob.get(), cudnn.get(), native.get()}) {
      Tensor o = g->empty({rows, d.heads * d.head_dim}, DType::kBF16);
      Tensor lse = g->empty({d.batch, d.heads, d.seq}, DType::kF32);
      Tensor dq = g->empty(q.gpu.shape(), DType::kBF16);
      Tensor dk = g->empty(k.gpu.shape(), DType::kBF16);
      Tensor dv = g->empty(v.gpu.shape(), DType::kBF16);
      g->attention_forward(o, lse, q.gpu, k.gpu, v.gpu, d);
      g->attention_backward(dq, dk, dv, dout.gpu, q.gpu, k.gpu, v.gpu, o, lse, d);
      g->synchronize();
      std::vector<float> all;
      for (const Tensor* t : {&o, &lse, &dq, &dk, &dv}) {
        std::vector<float> x = h.gpu_values(*t);
        all.insert(all.end(), x.begin(), x.end());
      }
      results.push_back(std::move(all));
    }
    const std::string tag = tag_of("auto", d);
    EXPECT_EQ(results[0], results[1]) << tag << ": auto differs from cudnn";
    if (d.seq == 1) EXPECT_EQ(results[0], results[2]) << tag << ": T = 1 should run native";
    else EXPECT_NE(results[0], results[2]) << tag << ": auto gave the native kernels' bits";
  }
}

}  // namespace
}  // namespace moe::test
