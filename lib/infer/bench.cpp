// Latency runs (see bench.h): timing loop, percentiles, roofline inputs.
#include "infer/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "core/error.h"
#include "infer/decode_session.h"

namespace moe::infer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}


// Nearest-rank percentile of the step times (q in (0, 100]).
double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(q / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// The op families for a decode step; a single process has no communication.
const char* decode_family(const std::string& fam) {
  if (fam == "attention" || fam == "rope") return "attention";
  if (fam == "router") return "router";
  if (fam == "grouped_matmul" || fam == "swiglu") return "experts";
  if (fam == "moe_dispatch") return "dispatch";
  if (fam == "matmul") return "projections+head";
  if (fam == "norm") return "norm";
  return "other";
}

std::vector<std::vector<int32_t>> random_prompts(int64_t b, int64_t p, int64_t vocab,
                                                 std::mt19937_64& rng) {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(b));
  const int64_t lo = std::min<int64_t>(3, vocab - 1);  // past unk/bos/eos when there is room
  for (auto& s : out) {
    for (int64_t i = 0; i < p; ++i) {
      s.push_back(static_cast<int32_t>(lo + static_cast<int64_t>(rng() % (vocab - lo))));
    }
  }
  return out;
}

int32_t argmax(const float* x, int64_t n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);
}

}  // namespace

MeanSd mean_sd(const std::vector<double>& v) {
  MeanSd r;
  if (v.empty()) return r;
  for (double x : v) r.mean += x;
  r.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - r.mean) * (x - r.mean);
    r.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));  // sample sd, as llama-bench
  }
  return r;
}

double measure_copy_bandwidth() {
  const size_t n = (128u << 20) / sizeof(double);
  std::vector<double> a(n, 1.0), b(n, 0.0);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) b[i] = a[i];
    const double s = seconds_since(t0);
    best = std::max(best, 2.0 * static_cast<double>(n * sizeof(double)) / s / 1e9);
    std::swap(a, b);
  }
  return best;
}

double decode_bytes_per_token(MoeModel& model, double ctx) {
  const ModelConfig& c = model.config();
  double expert = 0, other = 0;
  for (const Param& p : model.params()) {
    const double bytes = static_cast<double>(p.lowp.defined() ? p.lowp.nbytes() : p.value.nbytes());
    if (p.name.find(".mlp.experts.") != std::string::npos) {
      expert += bytes;
    } else if (p.name == "model.embed_tokens.weight" && !c.tie_embeddings) {
      other += bytes / static_cast<double>(c.vocab_size);  // one row
    } else {
      other += bytes;  // (tied: the head reads the whole table)
    }
  }
  const double routed = expert * static_cast<double>(c.top_k) / static_cast<double>(c.n_experts);
  const double kv = 2.0 * static_cast<double>(c.n_layers) * ctx *
                    static_cast<double>(c.n_kv_heads * c.resolved_head_dim()) *
                    static_cast<double>(dtype_size(model.compute_dtype()));
  return other + routed + kv;
}

std::vector<BenchResult> run_bench(MoeModel& model, ProfilingBackend& profiler,
                                   const BenchOptions& o, ExpertCache* cache) {
  const ModelConfig& c = model.config();
  MOE_USAGE_CHECK(o.repetitions >= 1, "-r must be >= 1, got {}", o.repetitions);
  for (int64_t p : o.prompt_lengths) {
    for (int64_t n : o.gen_lengths) {
      MOE_USAGE_CHECK(p >= 1 && n >= 1 && p + n <= c.max_seq_len, "-p {} -n {}: need p >= 1, "
                      "n >= 1 and p + n <= max_seq_len ({})", p, n, c.max_seq_len);
    }
  }
  std::mt19937_64 rng(o.seed);
  std::vector<BenchResult> results;
  for (int64_t b : o.batch_sizes) {
    MOE_USAGE_CHECK(b >= 1, "-b {}: batch sizes must be >= 1", b);
    DecodeSession session(model, b);
    session.set_stepwise_prompts(cache != nullptr);
    for (int64_t p : o.prompt_lengths) {
      for (int64_t n : o.gen_lengths) {
        BenchResult r;
        r.prompt = p;
        r.gen = n;
        r.batch = b;
        r.reps = o.repetitions;
        std::vector<double> pre, ttft, dec, p50, p90, p99;
        int64_t cache_acc = 0, cache_hits = 0, cache_bytes = 0, cache_tokens = 0;
        // Repetition 0 is the untimed profiled one (it also warms up), then the timed ones.
        for (int64_t rep = 0; rep <= o.repetitions; ++rep) {
          const bool profiled = rep == 0;
          const auto prompts = random_prompts(b, p, c.vocab_size, rng);
          profiler.reset();
          profiler.set_enabled(false);
          auto t0 = Clock::now();
          session.start(prompts);
          const double t_first = seconds_since(t0);
          if (cache != nullptr) cache->reset_stats();
          profiler.set_enabled(profiled);
          std::vector<double> steps;
          std::vector<int32_t> next(static_cast<size_t>(b));
          for (int64_t s = 0; s < n; ++s) {
            for (int64_t i = 0; i < b; ++i) next[i] = argmax(session.logits(i), c.vocab_size);
            t0 = Clock::now();
            session.step(next);
            steps.push_back(seconds_since(t0));
            if (profiled) {
              profiler.set_enabled(false);
              const auto routing = model.routing();
              if (r.distinct_experts.empty()) r.distinct_experts.assign(routing.size(), 0.0);
              for (size_t l = 0; l < routing.size(); ++l) {
                std::vector<int32_t> ids = routing[l].topk_idx;
                std::sort(ids.begin(), ids.end());
                r.distinct_experts[l] += static_cast<double>(
                    std::unique(ids.begin(), ids.end()) - ids.begin()) / static_cast<double>(n);
              }
              profiler.set_enabled(true);
            }
          }
          profiler.set_enabled(false);
          if (profiled) {
            double total = 0;
            for (const auto& [fam, sec] : profiler.family_seconds()) {
              r.decode_family_share[decode_family(fam)] += sec;
              total += sec;
            }
            for (auto& [fam, sec] : r.decode_family_share) sec = total > 0 ? sec / total : 0;
            r.decode_family_share["communication"] = 0.0;
            continue;
          }
          double sum = 0;
          for (double s : steps) sum += s;
          pre.push_back(static_cast<double>(b * p) / t_first);
          ttft.push_back(t_first * 1e3);
          dec.push_back(static_cast<double>(b * n) / sum);
          p50.push_back(percentile(steps, 50) * 1e3);
          p90.push_back(percentile(steps, 90) * 1e3);
          p99.push_back(percentile(steps, 99) * 1e3);
          if (cache != nullptr) {
            cache_acc += cache->stats().accesses;
            cache_hits += cache->stats().hits;
            cache_bytes += cache->stats().bytes_read;
            cache_tokens += cache->stats().tokens;
          }
          if (o.progress) {
            std::fprintf(stderr, "bench: p=%lld n=%lld b=%lld rep %lld/%lld: TTFT %.1f ms, "
                         "decode %.1f tok/s\n", static_cast<long long>(p),
                         static_cast<long long>(n), static_cast<long long>(b),
                         static_cast<long long>(rep), static_cast<long long>(o.repetitions),
                         t_first * 1e3, dec.back());
          }
        }
        r.prefill_tok_s = mean_sd(pre);
        r.ttft_ms = mean_sd(ttft);
        r.decode_tok_s = mean_sd(dec);
        r.p50_ms = mean_sd(p50);
        r.p90_ms = mean_sd(p90);
        r.p99_ms = mean_sd(p99);
        if (b == 1) {
          r.bytes_per_token = decode_bytes_per_token(model, static_cast<double>(p) +
                                                                static_cast<double>(n) / 2.0);
          r.achieved_gb_s = r.bytes_per_token * r.decode_tok_s.mean / 1e9;
        }
        if (cache != nullptr) {
          r.has_cache = true;
          r.cache_hit_rate = cache_acc > 0 ? static_cast<double>(cache_hits) / cache_acc : 0;
          r.cache_bytes_per_token =
              cache_tokens > 0 ? static_cast<double>(cache_bytes) / cache_tokens : 0;
        }
        results.push_back(r);
      }
    }
  }
  return results;
}

}  // namespace moe::infer
