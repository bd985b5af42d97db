// Issue 17: do the auxiliary losses' gradients survive a bf16 run?
//
// At the paper's scale an auxiliary term's gradient is ~1e-3 of the main-path gradient it is
// added to, below half a bf16 unit (2^-9 relative). Added into a bf16 buffer that already holds
// the main path it is rounded away, silently: the bf16-vs-CPU gradient tests cannot see it, the
// term being tiny next to the total. So each term is isolated: for the bf16 CUDA model and the
// f32 CPU model, (gradient with the term) - (gradient without it), on the same weights and batch.
// The coefficient of each term is set so that its gradient is 1.5e-3 of the main gradient on the
// parameters it targets (measured on the CPU), as for R_sp in the 0.4B config (16k tokens per
// micro-batch, lambda_sp = 2e-3, expert width 1024: ~3e-9 against ~2e-6).
//
// What can agree, and what is asserted:
// - L_lb, L_z, R_cp on the router weights. Their path is f32 from the loss to the router weight
//   gradient (dprobs, dlogits, the router's f32 input and weight gradient), so on the LAST MoE
//   layer the difference must agree element by element (relative L2 <= 5%). On earlier layers
//   it also carries later layers' terms, which come back through the bf16 residual gradient,
//   where a 1e-3 change flips roundings: there only the share that arrives (the slope of the
//   bf16 difference on the f32 one) is asserted, within 5% of 1.
// - R_sp on the routed experts' gate and up projections: it enters dz, which is f32 (the fix);
//   SwiGLU backward then writes dgate/dup in bf16, where each element of the term flips a
//   rounding or not (unbiased, but as large as the term itself element by element). So the
//   slope is asserted (within 5% of 1; it is ~0 when the term is rounded away) and the element
//   error is printed, not asserted.
// Printed only: each term's effect upstream of the MoE block (attention, embedding), which
// reaches it through the bf16 dnorm and residual gradient; at a 1e-3 share it is below bf16
// resolution there (docs/gpu.md).
//
// SpTermSurvivesTheExpertBackward isolates the same question at the op level, where the
// elements can be counted: the model's expert backward chain (down-projection dx -> sp backward
// -> SwiGLU backward -> gate-projection dw) with the sp term 1.5e-3 of the main dz in RMS, run
// with the old bf16 dz buffer and with the f32 one the model now uses.
//
// Without a CUDA device every test is SKIPPED with a message, never passed.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "gpu/model_harness.h"
#include "gpu/op_harness.h"
#include "model/model.h"

namespace moe {
namespace {

using Grads = std::vector<std::vector<float>>;  // trainable parameters, in params() order

Grads step_grads(Backend& be, DType dtype, const Config& c, const Batch& b,
                 std::vector<std::string>* names = nullptr) {
  MoeModel m(c.model, c.loss, be, c.train.batch_size, c.train.seq_len, dtype);
  m.init_parameters(7);
  m.zero_grad();
  m.forward(b, true);
  m.backward(1.0f);
  Grads out;
  for (const Param& p : m.params()) {
    if (!p.trainable) continue;
    out.push_back(be.download_vec<float>(p.grad));
    if (names != nullptr) names->push_back(p.name);
  }
  return out;
}

// with - without over the parameters whose name passes `pick`, concatenated.
template <typename Pick>
std::vector<double> delta(const Grads& with, const Grads& without,
                          const std::vector<std::string>& names, Pick pick) {
  std::vector<double> out;
  for (size_t i = 0; i < names.size(); ++i)
    if (pick(names[i]))
      for (size_t j = 0; j < with[i].size(); ++j)
        out.push_back(double(with[i][j]) - double(without[i][j]));
  return out;
}

template <typename Pick>
double norm_of(const Grads& g, const std::vector<std::string>& names, Pick pick) {
  double s = 0;
  for (size_t i = 0; i < names.size(); ++i)
    if (pick(names[i]))
      for (float x : g[i]) s += double(x) * double(x);
  return std::sqrt(s);
}

struct Agreement {
  double rel_l2;    // ||d_gpu - d_cpu|| / ||d_cpu||
  double slope;     // <d_gpu, d_cpu> / <d_cpu, d_cpu>: 1 = the term arrives in full, 0 = lost
  double vanished;  // share of elements where the term changed the CPU gradient but not bf16's
};

Agreement compare(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0, dot = 0;
  int64_t moved = 0, lost = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
    dot += got[i] * ref[i];
    if (ref[i] != 0) {
      ++moved;
      lost += got[i] == 0;
    }
  }
  den = std::max(den, 1e-300);
  return {std::sqrt(num / den), dot / den, moved > 0 ? double(lost) / double(moved) : 0.0};
}

bool is_expert_in(const std::string& n) {
  return n.find(".mlp.experts.") != std::string::npos &&
         (n.find("gate_proj") != std::string::npos || n.find("up_proj") != std::string::npos);
}
bool is_router(const std::string& n) { return n.find(".mlp.gate.weight") != std::string::npos; }
bool is_upstream(const std::string& n) {
  return n.find("self_attn") != std::string::npos || n.find("embed_tokens") != std::string::npos;
}

double& coef_of(LossConfig& l, const std::string& term) {
  if (term == "sp") return l.sp_coef;
  if (term == "lb") return l.lb_coef;
  if (term == "z") return l.z_coef;
  return l.cp_coef;
}

TEST(CudaPrecision, EachAuxiliaryGradientSurvivesBf16) {
  REQUIRE_CUDA();
  Config base = small_config({}, "vanilla");
  base.model.expert_ffn_dim = 96;  // more expert elements: the comparison is statistical
  base.train.batch_size = 1;       // one sequence: the odds that bf16 routes like f32 stay high
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");

  // A batch whose top-k sets agree between the bf16 and the f32 model (see test_cuda_model.cpp).
  Batch batch;
  bool routed_alike = false;
  for (uint64_t seed = 11; seed < 41 && !routed_alike; ++seed) {
    batch = make_batch(base, seed);
    MoeModel ref(base.model, base.loss, *cpu, 1, base.train.seq_len, DType::kF32);
    MoeModel dev(base.model, base.loss, *gpu, 1, base.train.seq_len, DType::kBF16);
    ref.init_parameters(7);
    dev.init_parameters(7);
    ref.forward(batch, true);
    dev.forward(batch, true);
    routed_alike = same_expert_sets(ref, dev);
  }
  ASSERT_TRUE(routed_alike) << "no batch routes alike in bf16 and f32";

  std::vector<std::string> names;
  const Grads cpu_base = step_grads(*cpu, DType::kF32, base, batch, &names);
  const Grads gpu_base = step_grads(*gpu, DType::kBF16, base, batch);
  constexpr double kShare = 1.5e-3;  // the term's gradient / the main gradient, as in the paper
  std::string last_router;
  for (const std::string& n : names)
    if (is_router(n)) last_router = n;
  const auto is_last_router = [&](const std::string& n) { return n == last_router; };
  for (const std::string term : {"sp", "lb", "z", "cp"}) {
    const auto target = term == "sp" ? is_expert_in : is_router;
    Config c = base;
    c.loss.losses = {term};
    // Calibrate on the CPU: the term's gradient is linear in its coefficient.
    const Grads probe = step_grads(*cpu, DType::kF32, c, batch);
    const double share = std::sqrt([&] {
      double s = 0;
      for (double x : delta(probe, cpu_base, names, target)) s += x * x;
      return s;
    }()) / norm_of(cpu_base, names, target);
    ASSERT_GT(share, 0.0) << term << " does not reach its target parameters on the CPU";
    coef_of(c.loss, term) *= kShare / share;

    const Grads cpu_with = step_grads(*cpu, DType::kF32, c, batch);
    const Grads gpu_with = step_grads(*gpu, DType::kBF16, c, batch);
    const Agreement on_target = compare(delta(gpu_with, gpu_base, names, target),
                                        delta(cpu_with, cpu_base, names, target));
    const Agreement last = compare(delta(gpu_with, gpu_base, names, is_last_router),
                                   delta(cpu_with, cpu_base, names, is_last_router));
    const Agreement upstream = compare(delta(gpu_with, gpu_base, names, is_upstream),
                                       delta(cpu_with, cpu_base, names, is_upstream));
    std::printf("[aux %-2s] coef %.3g | %s: slope %.4f, rel L2 %.4f, vanished %.1f%% | last "
                "router: rel L2 %.4f | upstream: slope %.4f, rel L2 %.4f, vanished %.1f%%\n",
                term.c_str(), coef_of(c.loss, term), term == "sp" ? "experts" : "routers",
                on_target.slope, on_target.rel_l2, 100 * on_target.vanished, last.rel_l2,
                upstream.slope, upstream.rel_l2, 100 * upstream.vanished);
    EXPECT_NEAR(on_target.slope, 1.0, 0.05)
        << term << ": only this share of its gradient reaches the target parameters in bf16";
    if (term != "sp") {
      EXPECT_LE(last.rel_l2, 0.05)
          << term << ": its bf16 gradient on the last router differs from the f32 CPU's";
    }
  }
}

// The expert backward chain of moe_backward on one backend; dz in `dz_dtype`.
struct ExpertChain {
  std::vector<float> dz, dgate, dup, dw_gate;
};

ExpertChain run_chain(Backend& be, DType act, DType dz_dtype, const std::vector<float>& dy_v,
                      const std::vector<float>& wd_v, const std::vector<float>& z_v,
                      const std::vector<float>& gate_v, const std::vector<float>& up_v,
                      const std::vector<float>& x_v, const std::vector<float>& wg_v,
                      const std::vector<int32_t>& topk, int64_t n, int64_t k, int64_t e,
                      int64_t d, int64_t f, float sp_coef) {
  const int64_t r = n * k;
  auto make = [&](const Shape& shape, const std::vector<float>& v, DType dt) {
    Tensor staging = be.empty(shape, DType::kF32);
    be.upload_vec(staging, v);
    if (dt == DType::kF32) return staging;
    Tensor t = be.empty(shape, dt);
    be.convert(t, staging);
    return t;
  };
  auto values = [&](const Tensor& t) {
    if (t.dtype() == DType::kF32) return be.download_vec<float>(t);
    Tensor f32 = be.empty(t.shape(), DType::kF32);
    be.convert(f32, t);
    return be.download_vec<float>(f32);
  };
  Tensor idx = be.empty({n, k}, DType::kI32);
  be.upload_vec(idx, topk);
  Tensor offsets = be.empty({e + 1}, DType::kI32), row_token = be.empty({r}, DType::kI32);
  Tensor token_row = be.empty({n, k}, DType::kI32);
  be.moe_dispatch_plan(offsets, row_token, token_row, idx, e);
  Tensor dy = make({r, d}, dy_v, act), wd = make({e, d, f}, wd_v, act), z = make({r, f}, z_v, act);
  Tensor gate = make({r, f}, gate_v, act), up = make({r, f}, up_v, act);
  Tensor x = make({r, d}, x_v, act), wg = make({e, f, d}, wg_v, act);
  Tensor dz = be.empty({r, f}, dz_dtype), dwd = be.zeros({e, d, f}, DType::kF32);
  be.grouped_matmul_backward(dz, dwd, dy, z, wd, offsets);
  if (sp_coef != 0.0f) be.sp_loss_backward(dz, z, token_row, sp_coef);
  Tensor dgate = be.empty({r, f}, act), dup = be.empty({r, f}, act);
  be.swiglu_backward(dgate, dup, dz, gate, up);
  Tensor dx = be.empty({r, d}, act), dwg = be.zeros({e, f, d}, DType::kF32);
  be.grouped_matmul_backward(dx, dwg, dgate, x, wg, offsets);
  return {values(dz), values(dgate), values(dup), values(dwg)};
}

std::vector<double> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = double(a[i]) - double(b[i]);
  return out;
}

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / double(std::max<size_t>(v.size(), 1)));
}

TEST(CudaPrecision, SpTermSurvivesTheExpertBackward) {
  REQUIRE_CUDA();
  auto cpu = make_backend("cpu");
  auto gpu = make_backend("cuda");
  const int64_t n = 128, k = 2, e = 4, d = 64, f = 256, r = n * k;
  test::OpHarness h(*cpu, *gpu, DType::kBF16, 2024u);
  // Inputs on the bf16 grid, so both backends start from the same numbers.
  auto bf16_values = [&](int64_t count) {
    std::vector<float> v = h.random(count);
    for (float& x : v) x = test::round_to_bf16(x);
    return v;
  };
  const std::vector<float> dy = bf16_values(r * d), wd = bf16_values(e * d * f);
  const std::vector<float> z = bf16_values(r * f), gate = bf16_values(r * f);
  const std::vector<float> up = bf16_values(r * f), x = bf16_values(r * d);
  const std::vector<float> wg = bf16_values(e * f * d);
  std::vector<int32_t> topk;
  for (int64_t t = 0; t < n; ++t) {
    topk.push_back(int32_t(t % e));  // two distinct experts per token, every pair in turn
    topk.push_back(int32_t((t % e + 1 + (t / e) % (e - 1)) % e));
  }
  auto chain = [&](Backend& be, DType act, DType dz_dtype, float coef) {
    return run_chain(be, act, dz_dtype, dy, wd, z, gate, up, x, wg, topk, n, k, e, d, f, coef);
  };
  // Calibrate on the CPU: rms(sp term) = 1.5e-3 rms(main dz), as in the 0.4B config.
  const ExpertChain ref0 = chain(*cpu, DType::kF32, DType::kF32, 0.0f);
  const ExpertChain probe = chain(*cpu, DType::kF32, DType::kF32, 1.0f);
  std::vector<double> main_dz(ref0.dz.begin(), ref0.dz.end());
  const float coef = float(1.5e-3 * rms(main_dz) / rms(minus(probe.dz, ref0.dz)));
  const ExpertChain ref1 = chain(*cpu, DType::kF32, DType::kF32, coef);

  for (DType dz_dtype : {DType::kBF16, DType::kF32}) {
    const ExpertChain g0 = chain(*gpu, DType::kBF16, dz_dtype, 0.0f);
    const ExpertChain g1 = chain(*gpu, DType::kBF16, dz_dtype, coef);
    const Agreement on_dz = compare(minus(g1.dz, g0.dz), minus(ref1.dz, ref0.dz));
    const Agreement on_dgate = compare(minus(g1.dgate, g0.dgate), minus(ref1.dgate, ref0.dgate));
    const Agreement on_dup = compare(minus(g1.dup, g0.dup), minus(ref1.dup, ref0.dup));
    const Agreement on_dw = compare(minus(g1.dw_gate, g0.dw_gate),
                                    minus(ref1.dw_gate, ref0.dw_gate));
    std::printf("[sp chain, %s dz] vanished: dz %.1f%%, dgate %.1f%%, dup %.1f%% | slope: dz "
                "%.4f, dgate %.4f, dup %.4f, gate dw %.4f | rel L2: dgate %.3f, gate dw %.3f\n",
                dtype_name(dz_dtype), 100 * on_dz.vanished, 100 * on_dgate.vanished,
                100 * on_dup.vanished, on_dz.slope, on_dgate.slope, on_dup.slope, on_dw.slope,
                on_dgate.rel_l2, on_dw.rel_l2);
    if (dz_dtype == DType::kBF16) {
      // The premise of issue 17 at this scale: in a bf16 dz most of the term is rounded away.
      EXPECT_GT(on_dz.vanished, 0.5) << "the calibration no longer reaches the bf16 limit";
      continue;
    }
    EXPECT_EQ(on_dz.vanished, 0.0) << "the sp term is lost in the f32 dz";
    EXPECT_NEAR(on_dz.slope, 1.0, 0.02) << "the sp term in the f32 dz";
    EXPECT_NEAR(on_dgate.slope, 1.0, 0.05) << "the share of the sp term that reaches dgate";
    EXPECT_NEAR(on_dup.slope, 1.0, 0.05) << "the share of the sp term that reaches dup";
    EXPECT_NEAR(on_dw.slope, 1.0, 0.05) << "the share of the sp term in the gate weight gradient";
  }
}

}  // namespace
}  // namespace moe
