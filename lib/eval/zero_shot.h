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

// One document's scores, for moeeval --log-samples (the fields of the harness's samples files).
struct SampleRecord {
  int64_t doc_id = 0;
  std::string prompt;                  // the first request's context
  std::vector<std::string> choices;    // each request's continuation
  std::vector<double> lls;             // log-likelihood of each choice
  std::vector<bool> greedy;            // every token of the choice is the argmax
  std::vector<int64_t> n_tokens;       // scored tokens of each choice
  std::vector<double> n_chars;         // code points of each choice (acc_norm's divisor)
  int64_t gold = 0;
  int64_t pred = -1, pred_norm = -1;   // argmax of ll, of ll / chars (-1: not this task kind)
  double acc = 0, acc_norm = 0;        // acc_norm only for multiple-choice tasks
};

struct TaskResult {
  std::string name, split, source, note;
  TaskOutput output = TaskOutput::kMultipleChoice;
  double version = 1.0;
  int64_t num_fewshot = 0;
  std::string dataset_name, description;  // MMLU's subject and description (configs)
  int64_t n_original = 0, n_effective = 0;
  // In the harness's key order: acc, acc_norm (multiple choice); perplexity, acc (lambada).
  std::vector<std::pair<std::string, MetricValue>> metrics;
  ScoringStats stats;
  std::vector<SampleRecord> samples;  // one per scored document, in order
  const MetricValue* find(const std::string& metric) const;
  // Questions scored per second, and seconds per question (0 when nothing was timed).
  double samples_per_second() const {
    return stats.seconds > 0 ? static_cast<double>(n_effective) / stats.seconds : 0.0;
  }
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
