// Latency runs shaped like llama-bench (moeinfer --bench): for every prompt length p, generation
// length n and batch size b, r repetitions of: prefill b random prompts of p tokens (time to
// first token: prompt in, first next-token logits out), then n decode steps of one token per
// sequence. Reported as mean ± sd over the repetitions: prefill tokens/s, TTFT, decode tokens/s,
// and the per-token decode latency p50 / p90 / p99 (percentiles of one repetition's step times).
// One extra, untimed repetition per combination runs with per-op timing (ProfilingBackend) for
// the breakdown of decode time by op family and counts the distinct experts each MoE layer
// touches per decode step. At b = 1, the roofline: bytes a decode step must read (the active
// weights + the KV cache) against memory bandwidth measured in the same run (a STREAM-style copy).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bench/profiling_backend.h"
#include "infer/expert_cache.h"
#include "model/model.h"

namespace moe::infer {

struct BenchOptions {
  std::vector<int64_t> prompt_lengths{128}, gen_lengths{128}, batch_sizes{1};
  int64_t repetitions = 5;
  uint64_t seed = 1;
  bool progress = true;  // one line per repetition on stderr
};

struct MeanSd {
  double mean = 0, sd = 0;
};
// Mean and sample standard deviation (as llama-bench); sd 0 for fewer than 2 values.
MeanSd mean_sd(const std::vector<double>& v);

struct BenchResult {
  int64_t prompt = 0, gen = 0, batch = 0, reps = 0;
  MeanSd prefill_tok_s, ttft_ms, decode_tok_s, p50_ms, p90_ms, p99_ms;
  std::map<std::string, double> decode_family_share;  // op family -> fraction of decode op time
  std::vector<double> distinct_experts;               // per MoE layer, mean per decode step
  // Batch 1 only (0 otherwise): bytes one decode step reads, and achieved / measured bandwidth.
  double bytes_per_token = 0, achieved_gb_s = 0, roofline_fraction = 0;
  // With an expert cache: over the timed decode steps.
  bool has_cache = false;
  double cache_hit_rate = 0, cache_bytes_per_token = 0;
};

// Memory bandwidth (GB/s, 1e9 bytes) of a multi-threaded copy of two 128 MiB buffers, best of 5,
// counting read + write bytes as STREAM's Copy does.
double measure_copy_bandwidth();

// Bytes a batch-1 decode step at context length ctx must read: every weight it multiplies by
// (attention, norms, dense FFNs, router, shared experts, the k routed experts of each MoE layer,
// the output head; one embedding row) plus the KV cache of ctx positions in every layer.
double decode_bytes_per_token(MoeModel& model, double ctx);

// `profiler` must be the backend the model was built on; `cache` may be null.
std::vector<BenchResult> run_bench(MoeModel& model, ProfilingBackend& profiler,
                                   const BenchOptions& o, ExpertCache* cache);

// -o md | csv | json
std::string format_bench(const std::vector<BenchResult>& results, const std::string& format,
                         const std::string& header_line, double bandwidth_gb_s);

}  // namespace moe::infer
