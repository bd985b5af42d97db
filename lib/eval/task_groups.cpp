// Group aggregation and the harness's result ordering (see task_groups.h).
#include "eval/task_groups.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "eval/task_readers.h"
#include "eval/text_utils.h"

namespace moe::eval {

const std::vector<TaskGroupDef>& builtin_groups() {
  static const std::vector<TaskGroupDef> groups = [] {
    std::vector<TaskGroupDef> g;
    const std::vector<std::pair<std::string, std::string>> categories = {
        {"stem", "stem"}, {"other", "other"}, {"social_sciences", "social sciences"},
        {"humanities", "humanities"}};
    for (const auto& [category, alias] : categories) {
      TaskGroupDef def{"mmlu_" + category, alias, {}, 2.0};
      for (const auto& s : mmlu_subjects()) {
        if (category == s.category) def.subtasks.push_back(std::string("mmlu_") + s.name);
      }
      g.push_back(def);
    }
    g.push_back({"mmlu", "mmlu",
                 {"mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}, 2.0});
    return g;
  }();
  return groups;
}

const MetricValue* GroupResult::find(const std::string& metric) const {
  for (const auto& [name, value] : metrics) {
    if (name == metric) return &value;
  }
  return nullptr;
}

MetricValue aggregate_weighted(const std::vector<GroupMember>& members) {
  MetricValue out;
  double n_total = 0, weighted = 0, pooled = 0;
  bool have_stderr = !members.empty();
  for (const GroupMember& m : members) {
    const double n = static_cast<double>(m.n);
    n_total += n;
    weighted += n * m.value;
    if (m.stderr_value) {
      pooled += (n - 1) * (*m.stderr_value) * (*m.stderr_value) * n;
    } else {
      have_stderr = false;
    }
  }
  out.value = n_total > 0 ? weighted / n_total : 0.0;
  const double dof = n_total - static_cast<double>(members.size());
  if (have_stderr && dof > 0) out.stderr_value = std::sqrt(pooled / dof / n_total);
  return out;
}

std::vector<GroupResult> aggregate_groups(const std::vector<TaskResult>& tasks) {
  std::vector<GroupResult> out;
  for (const TaskGroupDef& def : builtin_groups()) {
    std::vector<GroupMember> members;
    ScoringStats stats;
    int64_t shots = -1;
    bool complete = true;
    for (const std::string& sub : def.subtasks) {
      const auto t = std::find_if(tasks.begin(), tasks.end(),
                                  [&](const TaskResult& r) { return r.name == sub; });
      const auto g = std::find_if(out.begin(), out.end(),
                                  [&](const GroupResult& r) { return r.name == sub; });
      const MetricValue* acc = nullptr;
      if (t != tasks.end()) {
        acc = t->find("acc");
        if (acc) members.push_back({t->n_effective, acc->value, acc->stderr_value});
        stats.add(t->stats);
        shots = t->num_fewshot;
      } else if (g != out.end()) {
        acc = g->find("acc");
        if (acc) members.push_back({g->n, acc->value, acc->stderr_value});
        stats.add(g->stats);
        shots = g->num_fewshot;
      }
      if (!acc) {
        complete = false;
        break;
      }
    }
    if (!complete) continue;
    GroupResult res;
    res.name = def.name;
    res.alias = def.alias;
    res.subtasks = def.subtasks;
    res.version = def.version;
    res.num_fewshot = std::max<int64_t>(shots, 0);
    for (const GroupMember& m : members) res.n += m.n;
    res.metrics.push_back({"acc", aggregate_weighted(members)});
    res.stats = stats;
    out.push_back(std::move(res));
  }
  return out;
}

std::string row_alias(const std::string& alias, int depth) {
  if (depth == 0) return alias;
  return std::string(static_cast<size_t>(depth - 1), ' ') + " - " + alias;
}

std::string task_alias(const TaskResult& t) {
  return starts_with(t.name, "mmlu_") && !t.dataset_name.empty() ? t.dataset_name : t.name;
}

std::vector<ResultRow> result_rows(const std::vector<TaskResult>& tasks,
                                   const std::vector<GroupResult>& groups) {
  std::vector<ResultRow> rows;
  std::vector<bool> task_placed(tasks.size(), false), group_placed(groups.size(), false);
  auto task_index = [&](const std::string& name) -> int64_t {
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (tasks[i].name == name) return static_cast<int64_t>(i);
    }
    return -1;
  };
  auto group_index = [&](const std::string& name) -> int64_t {
    for (size_t i = 0; i < groups.size(); ++i) {
      if (groups[i].name == name) return static_cast<int64_t>(i);
    }
    return -1;
  };
  // Members of some group: they are placed under it, not at the top level.
  std::vector<bool> group_is_member(groups.size(), false);
  for (const GroupResult& g : groups) {
    for (const std::string& sub : g.subtasks) {
      const int64_t gi = group_index(sub);
      if (gi >= 0) group_is_member[gi] = true;
    }
  }
  // A group's members sorted by name, as the harness prints them.
  std::function<void(size_t, int)> place_group = [&](size_t gi, int depth) {
    rows.push_back({true, gi, depth});
    group_placed[gi] = true;
    std::vector<std::string> subs = groups[gi].subtasks;
    std::sort(subs.begin(), subs.end());
    for (const std::string& sub : subs) {
      const int64_t sg = group_index(sub);
      if (sg >= 0) {
        place_group(static_cast<size_t>(sg), depth + 1);
        continue;
      }
      const int64_t ti = task_index(sub);
      if (ti >= 0 && !task_placed[ti]) {
        rows.push_back({false, static_cast<size_t>(ti), depth + 1});
        task_placed[ti] = true;
      }
    }
  };
  // Top-level groups first (outermost, i.e. last defined, first), then the tasks in no group in
  // the order they ran.
  for (size_t gi = groups.size(); gi-- > 0;) {
    if (!group_is_member[gi] && !group_placed[gi]) place_group(gi, 0);
  }
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    if (!task_placed[ti]) rows.push_back({false, ti, 0});
  }
  return rows;
}

}  // namespace moe::eval
