// What moeeval measured for one checkpoint, and its JSON form.
//
// The JSON has the shape of lm-evaluation-harness's results file (v0.4.12; docs/model.md
// §4.2): "results" {task: {"name", "alias", "sample_len", "<metric>,none", "<metric>_stderr,none"}}
// (stderr "N/A" where the harness has none), "group_subtasks", "configs", "versions", "n-shot",
// "higher_is_better", "n-samples", "config", "git_hash", "date", "max_length", "model_name",
// "total_evaluation_time_seconds". moeeval's own measurements sit in sections of their own:
// "perplexity" {file: ...}, "routing" {file: routing statistics with the pathway matrices}, and
// "moeeval" (checkpoint, step, architecture, losses, zero-shot averages, evaluation tokens/s).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "eval/task_groups.h"
#include "eval/zero_shot.h"

namespace moe::eval {

struct CheckpointReport {
  std::string checkpoint;  // directory read
  int64_t step = 0;
  std::string arch, losses;
  int64_t params_total = 0, params_active = 0, max_length = 0;
  std::vector<TaskResult> tasks;
  std::vector<GroupResult> groups;  // aggregate_groups(tasks)
  std::vector<PerplexityResult> ppl;
  std::vector<RoutingEvalResult> routing;
  double seconds = 0;
};

struct RunSettings {  // the "config" section
  std::string device = "cpu";
  int64_t batch_size = 0, limit = 0, bootstrap_iters = 100000, threads = 0;
  bool kv_cache = true;  // zero-shot contexts shared through the KV cache (moeeval section)
};

// One named scalar of a report, for tables and side-by-side comparison.
struct FlatMetric {
  std::string section;  // "zero-shot", "perplexity", "routing"
  std::string name;     // e.g. "piqa acc_norm", "valid.txt ppl", "entropy"
  double value = 0;
  std::optional<double> stderr_value;
  bool higher_is_better = true;
};
std::vector<FlatMetric> flatten(const CheckpointReport& r);

// Zero-shot averages over the tasks run, a group (mmlu) counting as one task and its subtasks not
// at all: acc over every task; acc_norm where a task reports it, its acc otherwise. nullopt
// without tasks.
std::optional<double> zero_shot_average(const CheckpointReport& r, bool prefer_acc_norm);

nlohmann::json report_to_json(const CheckpointReport& r, const RunSettings& s);
// One checkpoint: report_to_json. Several: {"checkpoints": [report_to_json...]}.
nlohmann::json reports_to_json(const std::vector<CheckpointReport>& rs, const RunSettings& s);

}  // namespace moe::eval
