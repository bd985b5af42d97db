// bench_attention: time of one causal GQA attention forward + backward through the Backend
// interface, native kernels against cuDNN (train.attention), on random bf16 inputs. The shapes
// default to the 0.4b model (16 heads, 4 KV heads, head_dim 64) with a fixed number of tokens per
// call (the batch is tokens / seq), so seq 256 / 1024 / 4096 compare like for like.
//
//   bench_attention [--device cuda] [--attention native|cudnn] [--seq 256,1024,4096]
//                   [--tokens 16384] [--heads 16] [--kv-heads 4] [--head-dim 64]
//                   [--dtype bf16] [--reps 10] [--runs 5] [--json out.json]
//
// Per seq: 2 untimed fwd+bwd, then --runs timings of --reps fwd+bwd each (synchronised around
// the batch of reps); the report is the median run, in ms per fwd+bwd, and TFLOP/s with the
// FlashAttention accounting (causal forward 2 * B * H * T^2 * hd, backward 2.5 x forward).
// tools/bench_attention.sh runs it for both implementations and moebench's 0.4b MFU with each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/error.h"

namespace moe {
namespace {

struct Options {
  std::string device = "cuda", attention = "native", seqs = "256,1024,4096", dtype = "bf16";
  std::string json_path;
  int64_t tokens = 16384, heads = 16, kv_heads = 4, head_dim = 64, reps = 10, runs = 5;
};

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      MOE_USAGE_CHECK(used == item.size() && v > 0, "--seq: expected positive integers, found '{}'",
                      item);
      out.push_back(v);
    } catch (const std::logic_error&) {
      MOE_USAGE_FAIL("--seq: expected a comma-separated list of integers, found '{}'", s);
    }
  }
  MOE_USAGE_CHECK(!out.empty(), "--seq: expected at least one length");
  return out;
}

Tensor random_tensor(Backend& be, const Shape& shape, DType dtype, std::mt19937& rng) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> host(static_cast<size_t>(n));
  for (float& x : host) x = u(rng);
  Tensor f = be.empty(shape, DType::kF32);
  be.upload_vec(f, host);
  if (dtype == DType::kF32) return f;
  Tensor t = be.empty(shape, dtype);
  be.convert(t, f);
  return t;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{"bench_attention: causal GQA attention forward+backward, native vs cuDNN"};
  app.add_option("--device", o.device, "cpu, cuda or cuda:N");
  app.add_option("--attention", o.attention, "auto, native or cudnn");
  app.add_option("--seq", o.seqs, "comma-separated sequence lengths");
  app.add_option("--tokens", o.tokens, "tokens per call (batch = tokens / seq, at least 1)")
      ->check(CLI::PositiveNumber);
  app.add_option("--heads", o.heads, "query heads")->check(CLI::PositiveNumber);
  app.add_option("--kv-heads", o.kv_heads, "key/value heads")->check(CLI::PositiveNumber);
  app.add_option("--head-dim", o.head_dim, "head dimension")->check(CLI::PositiveNumber);
  app.add_option("--dtype", o.dtype, "bf16 or fp32")->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_option("--reps", o.reps, "fwd+bwd per timed run")->check(CLI::PositiveNumber);
  app.add_option("--runs", o.runs, "timed runs (the median is reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--json", o.json_path, "write the report here");
  CLI11_PARSE(app, argc, argv);

  const std::vector<int64_t> seqs = parse_list(o.seqs);
  auto be = make_backend(o.device);
  be->set_attention_impl(parse_attention_impl(o.attention, "--attention"));
  const DType dtype = o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  nlohmann::json report;
  report["device"] = be->name();
  report["attention"] = o.attention;
  report["dtype"] = o.dtype;
  report["heads"] = o.heads;
  report["kv_heads"] = o.kv_heads;
  report["head_dim"] = o.head_dim;
  report["tokens"] = o.tokens;
  report["runs"] = o.runs;
  report["reps"] = o.reps;
  std::mt19937 rng(1234);
  for (int64_t seq : seqs) {
    AttnDims d;
    d.batch = std::max<int64_t>(1, o.tokens / seq);
    d.seq = seq;
    d.heads = o.heads;
    d.kv_heads = o.kv_heads;
    d.head_dim = o.head_dim;
    const int64_t rows = d.batch * d.seq, qw = d.heads * d.head_dim, kw = d.kv_heads * d.head_dim;
    Tensor q = random_tensor(*be, {rows, qw}, dtype, rng);
    Tensor k = random_tensor(*be, {rows, kw}, dtype, rng);
    Tensor v = random_tensor(*be, {rows, kw}, dtype, rng);
    Tensor dout = random_tensor(*be, {rows, qw}, dtype, rng);
    Tensor out = be->empty({rows, qw}, dtype), lse = be->empty({d.batch, d.heads, seq}, DType::kF32);
    Tensor dq = be->empty({rows, qw}, dtype), dk = be->empty({rows, kw}, dtype);
    Tensor dv = be->empty({rows, kw}, dtype);
    auto step = [&] {
      be->attention_forward(out, lse, q, k, v, d);
      be->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, d);
    };
    for (int i = 0; i < 2; ++i) step();  // plans, scratch, caches
    be->synchronize();
    std::vector<double> ms;
    for (int64_t r = 0; r < o.runs; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < o.reps; ++i) step();
      be->synchronize();
      ms.push_back(1e3 * seconds_since(t0) / double(o.reps));
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const double fwd_flops = 2.0 * double(d.batch) * double(d.heads) * double(seq) * double(seq) *
                             double(d.head_dim);
    const double tflops = 3.5 * fwd_flops / (median * 1e-3) / 1e12;
    std::printf("%s %s %s seq %lld batch %lld: %.3f ms per fwd+bwd (median of %lld), %.1f "
                "TFLOP/s\n", be->name().c_str(), o.attention.c_str(), o.dtype.c_str(),
                static_cast<long long>(seq), static_cast<long long>(d.batch), median,
                static_cast<long long>(o.runs), tflops);
    report["results"].push_back({{"seq", seq}, {"batch", d.batch}, {"median_ms", median},
                                 {"all_ms", ms}, {"tflops", tflops}});
  }
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << report.dump(2) << "\n";
    MOE_CHECK(f.good(), "--json: cannot write {}", o.json_path);
  }
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  try {
    return moe::run(argc, argv);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
}
