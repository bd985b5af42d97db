// moeinfer --serve-ep (see ep_serve.h).
#include "infer/ep_serve.h"

#include <algorithm>
#include <chrono>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "eval/scoring_model.h"
#include "eval/zero_shot.h"
#include "infer/bench.h"

namespace moe::infer {
namespace {

// ResidentExpertParallel as the scorer's model: forward passes of this rank's rows, no KV cache
// (every pass is a collective, so the scorer's passes of all ranks line up one to one; a rank
// that has finished joins the others' passes with empty batches, drain()).
class EpScoring final : public eval::ScoringModel {
 public:
  EpScoring(ResidentExpertParallel& ep, const ModelConfig& c, int64_t rows)
      : ep_(ep), c_(c), rows_(rows) {}
  int64_t max_rows() const override { return rows_; }
  int64_t max_seq() const override { return c_.max_seq_len; }
  int64_t vocab() const override { return c_.vocab_size; }
  void forward(const Batch& batch) override {
    MOE_CHECK(ep_.forward(batch), "expert-parallel scoring: a pass with no tokens on any rank");
  }
  std::vector<float> logits() override { return ep_.logits(); }
  void drain() {
    while (ep_.forward(Batch{})) {
    }
  }

 private:
  ResidentExpertParallel& ep_;
  const ModelConfig& c_;
  int64_t rows_;
};

// This rank's share of a task: documents rank, rank + P, ... of the first `limit`.
eval::Task shard(const eval::Task& task, int rank, int P, int64_t limit) {
  eval::Task t = task;
  t.docs.clear();
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, task.docs.size()) : task.docs.size();
  for (int64_t i = rank; i < n; i += P) t.docs.push_back(task.docs[i]);
  return t;
}

// Max over the ranks of `value` / its mean over the ranks (1 when all are 0). Collective.
double max_over_mean(Communicator& comm, int64_t value) {
  const std::vector<uint64_t> all = comm.all_gather_host(static_cast<uint64_t>(value));
  double max = 0, sum = 0;
  for (uint64_t x : all) {
    max = std::max(max, static_cast<double>(x));
    sum += static_cast<double>(x);
  }
  return sum > 0 ? max * static_cast<double>(all.size()) / sum : 1.0;
}

}  // namespace

std::vector<EpServeRow> run_ep_serve(MoeModel& model, Communicator& comm,
                                     const std::vector<eval::Task>& tasks,
                                     const eval::Encoder& encode,
                                     const std::vector<routing::Placement>& placements,
                                     const EpServeOptions& options) {
  MOE_USAGE_CHECK(options.repetitions >= 1, "-r must be >= 1, got {}", options.repetitions);
  MOE_USAGE_CHECK(!tasks.empty(), "--serve-ep: no task to score");
  for (const eval::Task& t : tasks) {
    MOE_USAGE_CHECK(t.output == eval::TaskOutput::kMultipleChoice, "--serve-ep scores "
                    "multiple-choice tasks (acc); {} is not one", t.name);
  }
  const int P = comm.size(), rank = comm.rank();
  std::vector<eval::Task> mine;
  for (const eval::Task& t : tasks) mine.push_back(shard(t, rank, P, options.limit));
  eval::ZeroShotOptions zs;
  zs.start_token = options.start_token;
  zs.kv_cache = false;

  std::vector<std::unique_ptr<ResidentExpertParallel>> eps;
  std::vector<EpServeRow> rows;
  for (const routing::Placement& p : placements) {
    eps.push_back(std::make_unique<ResidentExpertParallel>(model, comm, p));
    EpServeRow r;
    r.placement = p.kind;
    r.devices = p.devices;
    rows.push_back(r);
  }
  for (int64_t rep = 0; rep < options.repetitions; ++rep) {
    for (size_t i = 0; i < placements.size(); ++i) {
      ResidentExpertParallel& ep = *eps[i];
      ep.reset_stats();
      EpScoring scoring(ep, model.config(), options.batch_size);
      comm.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<double> correct_docs = {0, 0};
      for (const eval::Task& t : mine) {
        const eval::TaskResult res = eval::evaluate_task(t, scoring, encode, zs);
        for (const auto& s : res.samples) correct_docs[0] += s.acc;
        correct_docs[1] += static_cast<double>(res.samples.size());
      }
      scoring.drain();
      comm.barrier();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      comm.all_reduce_sum_host(correct_docs);
      const ResidentEpStats& s = ep.stats();
      std::vector<int64_t> counts = {s.tokens,        s.context_bytes, s.expert_bytes,
                                     s.migrate_bytes, s.home_bytes,    s.hops,
                                     s.crossing,      s.first_hops,    s.first_crossing};
      comm.all_reduce_sum_host(counts);
      // Rank 0's timings decide (every rank waited at the same barriers).
      std::vector<double> times = {rank == 0 ? seconds : 0.0,
                                   rank == 0 ? s.comm_seconds / std::max(s.seconds, 1e-12) : 0.0};
      comm.all_reduce_sum_host(times);
      EpServeRow& r = rows[i];
      r.samples = static_cast<int64_t>(correct_docs[1]);
      r.acc = r.samples > 0 ? correct_docs[0] / correct_docs[1] : 0.0;
      r.samples_per_second.push_back(static_cast<double>(r.samples) / times[0]);
      r.comm_share.push_back(times[1]);
      r.tokens = counts[0];
      r.load_imbalance = max_over_mean(comm, s.resident_token_layers);
      r.expert_imbalance = max_over_mean(comm, s.expert_rows);
      std::vector<int64_t> layer_tokens = {s.resident_token_layers};
      comm.all_reduce_sum_host(layer_tokens);
      r.layer_imbalance = layer_tokens[0] > 0 ? static_cast<double>(s.busiest_token_layers) * P /
                                                    static_cast<double>(layer_tokens[0])
                                              : 1.0;
      r.stats = ResidentEpStats{};
      r.stats.forwards = s.forwards;
      r.stats.tokens = counts[0];
      r.stats.context_bytes = counts[1];
      r.stats.expert_bytes = counts[2];
      r.stats.migrate_bytes = counts[3];
      r.stats.home_bytes = counts[4];
      r.stats.hops = counts[5];
      r.stats.crossing = counts[6];
      r.stats.first_hops = counts[7];
      r.stats.first_crossing = counts[8];
      if (rank == 0) {
        spdlog::info("serve-ep: repetition {}/{}, {}: {} samples in {:.2f} s ({:.2f} samples/s)",
                     rep + 1, options.repetitions, r.placement, r.samples, times[0],
                     r.samples_per_second.back());
      }
    }
  }
  return rows;
}

std::string format_ep_serve(const std::vector<EpServeRow>& rows, const std::string& format,
                            const std::string& header) {
  std::ostringstream out;
  auto per_token = [](int64_t bytes, int64_t tokens) {
    return tokens > 0 ? static_cast<double>(bytes) / static_cast<double>(tokens) : 0.0;
  };
  auto frac = [](int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / b : 0.0; };
  if (format == "json") {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      const MeanSd sps = mean_sd(r.samples_per_second), share = mean_sd(r.comm_share);
      j.push_back({{"placement", r.placement},
                   {"devices", r.devices},
                   {"samples", r.samples},
                   {"acc", r.acc},
                   {"samples_per_second", r.samples_per_second},
                   {"samples_per_second_mean", sps.mean},
                   {"samples_per_second_sd", sps.sd},
                   {"comm_share_mean", share.mean},
                   {"load_imbalance", r.load_imbalance},
                   {"expert_imbalance", r.expert_imbalance},
                   {"layer_imbalance", r.layer_imbalance},
                   {"tokens", r.tokens},
                   {"cross_fraction", frac(r.stats.crossing, r.stats.hops)},
                   {"first_layer_cross_fraction", frac(r.stats.first_crossing, r.stats.first_hops)},
                   {"context_bytes_per_token", per_token(r.stats.context_bytes, r.tokens)},
                   {"expert_bytes_per_token", per_token(r.stats.expert_bytes, r.tokens)},
                   {"migrate_bytes_per_token", per_token(r.stats.migrate_bytes, r.tokens)},
                   {"home_bytes_per_token", per_token(r.stats.home_bytes, r.tokens)},
                   {"total_bytes_per_token", per_token(r.stats.total_bytes(), r.tokens)}});
    }
    return j.dump(2) + "\n";
  }
  if (format == "csv") {
    out << "placement,devices,samples,acc,samples_per_second_mean,samples_per_second_sd,"
           "comm_share,load_imbalance,layer_imbalance,expert_imbalance,cross_fraction,expert_bytes_per_token,migrate_bytes_per_token,"
           "context_bytes_per_token,home_bytes_per_token,total_bytes_per_token\n";
    for (const auto& r : rows) {
      const MeanSd sps = mean_sd(r.samples_per_second);
      out << fmt::format("{},{},{},{:.4f},{:.3f},{:.3f},{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},{:.1f},"
                         "{:.1f},{:.1f},{:.1f},{:.1f}\n", r.placement, r.devices, r.samples,
                         r.acc, sps.mean, sps.sd, mean_sd(r.comm_share).mean, r.load_imbalance,
                         r.layer_imbalance, r.expert_imbalance,
                         frac(r.stats.crossing, r.stats.hops),
                         per_token(r.stats.expert_bytes, r.tokens),
                         per_token(r.stats.migrate_bytes, r.tokens),
                         per_token(r.stats.context_bytes, r.tokens),
                         per_token(r.stats.home_bytes, r.tokens),
                         per_token(r.stats.total_bytes(), r.tokens));
    }
    return out.str();
  }
  MOE_USAGE_CHECK(format == "md", "-o {}: expected md, csv or json", format);
  out << header << "\n\n"
      << "| placement | P | samples | acc | samples/s | vs first | collectives share | "
         "tokens max/mean | per layer | expert rows max/mean | cross-device hops | "
         "expert + migrate B/token | context B/token | home B/token |\n"
      << "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  const double base = rows.empty() ? 0.0 : mean_sd(rows[0].samples_per_second).mean;
  for (const auto& r : rows) {
    const MeanSd sps = mean_sd(r.samples_per_second);
    out << fmt::format("| {} | {} | {} | {:.4f} | {:.2f} ± {:.2f} | {:.3f}x | {:.1f}% | {:.3f} | "
                       "{:.3f} | {:.3f} | {:.1f}% | {:.0f} | {:.0f} | {:.0f} |\n", r.placement,
                       r.devices, r.samples, r.acc, sps.mean, sps.sd,
                       base > 0 ? sps.mean / base : 0.0, 100 * mean_sd(r.comm_share).mean,
                       r.load_imbalance, r.layer_imbalance, r.expert_imbalance,
                       100 * frac(r.stats.crossing, r.stats.hops),
                       per_token(r.stats.expert_bytes + r.stats.migrate_bytes, r.tokens),
                       per_token(r.stats.context_bytes, r.tokens),
                       per_token(r.stats.home_bytes, r.tokens));
  }
  return out.str();
}

}  // namespace moe::infer
