// Task groups as lm-evaluation-harness 0.4.x aggregates them: MMLU's four categories
// (mmlu_stem, mmlu_other, mmlu_social_sciences, mmlu_humanities; lm_eval/tasks/mmlu/default/
// _mmlu_<category>.yaml) over their subjects, and mmlu over the four categories (_mmlu.yaml).
// Every group has aggregate_metric_list [acc, weight_by_size: true]:
//   acc    = sum_i n_i acc_i / sum_i n_i            (so mmlu's acc is the mean over questions)
//   stderr = the harness's pooled_sample_stderr:
//            sqrt( sum_i (n_i - 1) s_i^2 n_i / (sum_i n_i - #subtasks) / sum_i n_i )
// with n_i the subtask's scored documents and s_i its stderr; "N/A" if any s_i is.
// A group is reported when every one of its subtasks was run.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eval/zero_shot.h"

namespace moe::eval {

struct TaskGroupDef {
  std::string name;                  // "mmlu_stem"
  std::string alias;                 // "stem" (the YAML's group_alias)
  std::vector<std::string> subtasks; // tasks or groups, in the order the harness lists them
  double version = 2.0;
};
// The built-in groups, subgroups before the groups that contain them.
const std::vector<TaskGroupDef>& builtin_groups();

struct GroupResult {
  std::string name, alias;
  std::vector<std::string> subtasks;
  double version = 2.0;
  int64_t num_fewshot = 0;
  int64_t n = 0;  // documents, summed over the subtasks
  std::vector<std::pair<std::string, MetricValue>> metrics;  // "acc"
  ScoringStats stats;                                        // summed over the subtasks
  const MetricValue* find(const std::string& metric) const;
  double samples_per_second() const {
    return stats.seconds > 0 ? static_cast<double>(n) / stats.seconds : 0.0;
  }
};

// One subtask's contribution to a group: its size, value and stderr.
struct GroupMember {
  int64_t n = 0;
  double value = 0;
  std::optional<double> stderr_value;
};
// Size-weighted mean and pooled stderr (above).
MetricValue aggregate_weighted(const std::vector<GroupMember>& members);

// Every built-in group whose subtasks are all among `tasks` (or among the groups computed before
// it), in builtin_groups() order.
std::vector<GroupResult> aggregate_groups(const std::vector<TaskResult>& tasks);

// The rows of the harness's results table and of "results" in its JSON: each top-level group,
// then its subgroups (by name) each followed by its tasks, then the tasks in no group, in their
// order. depth 0 prints the name, depth d > 0 the alias after (d - 1) spaces and " - "
// (" - humanities", "  - formal_logic").
struct ResultRow {
  bool is_group = false;
  size_t index = 0;  // into the groups or the tasks
  int depth = 0;
};
std::vector<ResultRow> result_rows(const std::vector<TaskResult>& tasks,
                                   const std::vector<GroupResult>& groups);
std::string row_alias(const std::string& alias, int depth);
// The alias of a task: MMLU subjects drop "mmlu_" (the YAML's task_alias), others their name.
std::string task_alias(const TaskResult& t);

}  // namespace moe::eval
