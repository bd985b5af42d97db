// moeinfer --bench output: a llama-bench-like markdown table (default), CSV or JSON.
#include <cstdio>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/bench.h"

namespace moe::infer {
namespace {

std::string pm(const MeanSd& v, int digits) {
  return fmt::format("{:.{}f} ± {:.{}f}", v.mean, digits, v.sd, digits);
}

std::string experts_str(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : "/") + fmt::format("{:.2f}", x);
  return s;
}

std::string shares_str(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : " ") + fmt::format("{} {:.0f}%", k, v * 100);
  return s;
}

nlohmann::json ms_json(const MeanSd& v) { return {{"mean", v.mean}, {"sd", v.sd}}; }

}  // namespace

std::string format_bench(const std::vector<BenchResult>& results, const std::string& format,
                         const std::string& header_line, double bw) {
  std::ostringstream out;
  const bool cache = !results.empty() && results[0].has_cache;
  if (format == "json") {
    nlohmann::json j = {{"header", header_line}, {"copy_bandwidth_gb_s", bw}};
    j["results"] = nlohmann::json::array();
    for (const auto& r : results) {
      nlohmann::json e = {{"p", r.prompt}, {"n", r.gen}, {"b", r.batch}, {"reps", r.reps},
                          {"prefill_tok_s", ms_json(r.prefill_tok_s)},
                          {"ttft_ms", ms_json(r.ttft_ms)},
                          {"decode_tok_s", ms_json(r.decode_tok_s)},
                          {"latency_p50_ms", ms_json(r.p50_ms)},
                          {"latency_p90_ms", ms_json(r.p90_ms)},
                          {"latency_p99_ms", ms_json(r.p99_ms)},
                          {"decode_time_share", r.decode_family_share},
                          {"distinct_experts_per_layer", r.distinct_experts}};
      if (r.batch == 1) {
        e["decode_bytes_per_token"] = r.bytes_per_token;
        e["achieved_gb_s"] = r.achieved_gb_s;
        e["roofline_fraction"] = bw > 0 ? r.achieved_gb_s / bw : 0;
      }
      if (r.has_cache) {
        e["expert_cache_hit_rate"] = r.cache_hit_rate;
        e["expert_cache_bytes_per_token"] = r.cache_bytes_per_token;
      }
      j["results"].push_back(e);
    }
    return j.dump(2) + "\n";
  }
  if (format == "csv") {
    out << "p,n,b,reps,prefill_tok_s,prefill_tok_s_sd,ttft_ms,ttft_ms_sd,decode_tok_s,"
           "decode_tok_s_sd,p50_ms,p50_ms_sd,p90_ms,p90_ms_sd,p99_ms,p99_ms_sd,"
           "distinct_experts,bytes_per_token,achieved_gb_s,roofline_fraction"
        << (cache ? ",cache_hit_rate,cache_bytes_per_token" : "") << "\n";
    for (const auto& r : results) {
      out << fmt::format("{},{},{},{},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.4f},{:.4f},"
                         "{:.4f},{:.4f},{:.4f},{:.4f},{},{:.0f},{:.3f},{:.4f}",
                         r.prompt, r.gen, r.batch, r.reps, r.prefill_tok_s.mean,
                         r.prefill_tok_s.sd, r.ttft_ms.mean, r.ttft_ms.sd, r.decode_tok_s.mean,
                         r.decode_tok_s.sd, r.p50_ms.mean, r.p50_ms.sd, r.p90_ms.mean,
                         r.p90_ms.sd, r.p99_ms.mean, r.p99_ms.sd, experts_str(r.distinct_experts),
                         r.bytes_per_token, r.achieved_gb_s,
                         bw > 0 && r.batch == 1 ? r.achieved_gb_s / bw : 0.0);
      if (cache) out << fmt::format(",{:.4f},{:.0f}", r.cache_hit_rate, r.cache_bytes_per_token);
      out << "\n";
    }
    return out.str();
  }
  MOE_USAGE_CHECK(format == "md", "-o {}: expected md, csv or json", format);
  out << header_line << "\n\n";
  out << "| p | n | b | prefill t/s | TTFT ms | decode t/s | p50 ms | p90 ms | p99 ms | "
         "experts/layer/step |" << (cache ? " cache hits | read B/token |" : "") << "\n";
  out << "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--|" << (cache ? "--:|--:|" : "") << "\n";
  for (const auto& r : results) {
    out << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |", r.prompt, r.gen,
                       r.batch, pm(r.prefill_tok_s, 1), pm(r.ttft_ms, 2), pm(r.decode_tok_s, 1),
                       pm(r.p50_ms, 3), pm(r.p90_ms, 3), pm(r.p99_ms, 3),
                       experts_str(r.distinct_experts));
    if (cache) {
      out << fmt::format(" {:.1f}% | {:.0f} |", r.cache_hit_rate * 100, r.cache_bytes_per_token);
    }
    out << "\n";
  }
  out << "\nDecode time by op family (one profiled repetition; a single process has no "
         "communication):\n\n";
  for (const auto& r : results) {
    out << fmt::format("- p={} n={} b={}: {}\n", r.prompt, r.gen, r.batch,
                       shares_str(r.decode_family_share));
  }
  out << fmt::format("\nBatch-1 decode roofline (memory bandwidth by a 2 x 128 MiB copy in this "
                     "run: {:.1f} GB/s):\n\n", bw);
  for (const auto& r : results) {
    if (r.batch != 1) continue;
    out << fmt::format("- p={} n={}: {:.2f} MB read per token (active weights + KV cache) x "
                       "{:.1f} tok/s = {:.2f} GB/s, {:.1f}% of the measured bandwidth\n",
                       r.prompt, r.gen, r.bytes_per_token / 1e6, r.decode_tok_s.mean,
                       r.achieved_gb_s, bw > 0 ? 100 * r.achieved_gb_s / bw : 0.0);
  }
  return out.str();
}

}  // namespace moe::infer
