// Runs one zero-shot task on a model: builds the token requests of the first `limit` documents,
// scores them in batches, and aggregates acc / acc_norm / perplexity with their stderrs as the
// harness does.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eval/loglik_scorer.h"
#include "eval/task.h"
#include "eval/token_requests.h"

namespace moe::eval {

struct MetricValue {
  double value = 0;
  std::optional<double> stderr_value;  // nullopt -> "N/A"
};

struct TaskResult {
  std::string name, split, source, note;
  TaskOutput output = TaskOutput::kMultipleChoice;
  double version = 1.0;
  int64_t n_original = 0, n_effective = 0;
  // In the harness's key order: acc, acc_norm (multiple choice); perplexity, acc (lambada).
  std::vector<std::pair<std::string, MetricValue>> metrics;
  ScoringStats stats;
  const MetricValue* find(const std::string& metric) const;
};

struct ZeroShotOptions {
  int64_t limit = 0;                // 0: every document
  int64_t bootstrap_iters = 100000; // the harness CLI default (lambada perplexity stderr)
  int32_t start_token = 2;          // eos (docs/model.md §3)
  bool kv_cache = true;             // share contexts through the model's KV cache (if it has one)
};

TaskResult evaluate_task(const Task& task, ScoringModel& model, const Encoder& encode,
                         const ZeroShotOptions& options);

// Aggregation alone (tests): per-request scores in the order of the documents' requests.
TaskResult aggregate_task(const Task& task, int64_t n_docs,
                          const std::vector<ScoredRequest>& scores, int64_t bootstrap_iters);

}  // namespace moe::eval
