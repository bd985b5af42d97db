// Terminal tables of moeeval (see report_table.h).
#include "eval/report_table.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include <spdlog/fmt/fmt.h>

#include "eval/text_utils.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

std::string fmt_value(double v, int digits = 4) {
  if (!std::isfinite(v)) return "-";
  return fmt::format("{:.{}f}", v, digits);
}

std::string pad(const std::string& s, size_t width, bool right) {
  const size_t len = static_cast<size_t>(utf8_length(s));
  if (len >= width) return s;
  return right ? std::string(width - len, ' ') + s : s + std::string(width - len, ' ');
}

std::string speed_text(int64_t n, const ScoringStats& st) {
  if (st.seconds <= 0 || n <= 0) return "not timed";
  return fmt::format("{:.1f} questions/s ({:.1f} ms/question), {:.0f} tokens/s ({:.0f} computed)",
                     static_cast<double>(n) / st.seconds, 1000.0 * st.seconds / static_cast<double>(n),
                     st.tokens_per_second(), st.computed_tokens_per_second());
}

std::vector<std::string> metric_row(const std::string& label, const std::string& version,
                                    const std::string& shots, const std::string& name,
                                    const MetricValue& m, bool first) {
  const bool up = name != "perplexity";
  return {first ? label : "", first ? version : "", first ? "none" : "", first ? shots : "", name,
          up ? "↑" : "↓", fmt_value(m.value), "±",
          m.stderr_value ? fmt_value(*m.stderr_value) : "N/A"};
}

// The harness's results table: every task and group (groups with an empty n-shot), members
// indented under their group; then its "Groups" table when there are groups.
std::string task_table(const CheckpointReport& r) {
  const std::vector<std::string> header = {"Tasks", "Version", "Filter", "n-shot", "Metric", "",
                                           "Value", "", "Stderr"};
  const std::vector<bool> right = {false, true, false, true, false, false, true, false, true};
  std::vector<std::vector<std::string>> rows, group_rows;
  const std::vector<ResultRow> order = result_rows(r.tasks, r.groups);
  for (const ResultRow& row : order) {
    bool first = true;
    if (row.is_group) {
      const GroupResult& g = r.groups[row.index];
      const std::string label = row_alias(row.depth == 0 ? g.name : g.alias, row.depth);
      for (const auto& [name, m] : g.metrics) {
        rows.push_back(metric_row(label, fmt::format("{:g}", g.version), "", name, m, first));
        group_rows.push_back(metric_row(label, fmt::format("{:g}", g.version), "", name, m, first));
        first = false;
      }
      continue;
    }
    const TaskResult& t = r.tasks[row.index];
    const std::string label = row_alias(row.depth == 0 ? t.name : task_alias(t), row.depth);
    for (const auto& [name, m] : t.metrics) {
      rows.push_back(metric_row(label, fmt::format("{:g}", t.version),
                                std::to_string(t.num_fewshot), name, m, first));
      first = false;
    }
  }
  std::string out = format_table(header, rows, right);
  if (!group_rows.empty()) out += "\n" + format_table(header, group_rows, right);
  for (const ResultRow& row : order) {
    if (row.is_group && row.depth == 0) {
      const GroupResult& g = r.groups[row.index];
      out += fmt::format("  {}: {} questions in {} subtasks; {}\n", g.name, g.n, g.subtasks.size(),
                         speed_text(g.n, g.stats));
    } else if (!row.is_group && row.depth == 0) {
      const TaskResult& t = r.tasks[row.index];
      out += fmt::format("  {}: {} of {} documents from {}{}; {}\n", t.name, t.n_effective,
                         t.n_original, t.source, t.note.empty() ? "" : " (" + t.note + ")",
                         speed_text(t.n_effective, t.stats));
    }
  }
  return out;
}

std::string ppl_table(const CheckpointReport& r) {
  std::vector<std::vector<std::string>> rows;
  for (const PerplexityResult& p : r.ppl) {
    rows.push_back({p.source, std::to_string(p.documents), std::to_string(p.tokens),
                    std::to_string(p.bytes), fmt_value(p.perplexity, 3), fmt_value(p.bits_per_byte),
                    fmt_value(p.word_perplexity, 3), fmt::format("{:.0f}", p.stats.tokens_per_second())});
  }
  return format_table({"Text", "docs", "tokens", "bytes", "ppl", "bits/byte", "word ppl", "tokens/s"},
                      rows, {false, true, true, true, true, true, true, true});
}

std::string routing_tables(const RoutingEvalResult& re) {
  const RoutingSummary& s = re.summary;
  std::vector<std::vector<std::string>> rows;
  auto layer_row = [](const std::string& name, const LayerRoutingStats& st) {
    return std::vector<std::string>{name, fmt_value(st.entropy), fmt_value(st.entropy_normalized),
                                    fmt_value(st.topk_mass), fmt_value(st.overlap),
                                    fmt_value(st.lb_value), fmt_value(st.load_max_over_mean, 3),
                                    fmt_value(st.load_cv, 3)};
  };
  for (const auto& st : s.layers) rows.push_back(layer_row(std::to_string(st.layer), st));
  LayerRoutingStats avg;
  avg.entropy = s.entropy;
  avg.entropy_normalized = s.entropy_normalized;
  avg.topk_mass = s.topk_mass;
  avg.overlap = s.overlap;
  avg.lb_value = s.lb_value;
  avg.load_max_over_mean = s.load_max_over_mean;
  avg.load_cv = s.load_cv;
  rows.push_back(layer_row("mean", avg));
  std::string out = fmt::format("Routing on {} ({} tokens, {:.0f} tokens/s)\n", re.source,
                                s.n_tokens, re.stats.tokens_per_second());
  out += format_table({"MoE layer", "entropy", "H/logE", "top-k mass", "overlap cos^2", "lb",
                       "load max/mean", "load cv"},
                      rows, {false, true, true, true, true, true, true, true});
  rows.clear();
  for (const auto& p : s.pathways) {
    rows.push_back({fmt::format("{} -> {}", p.layer_from, p.layer_to), fmt_value(p.row_entropy),
                    fmt_value(p.row_entropy_normalized), fmt_value(p.top1_accuracy),
                    fmt_value(p.top1_accuracy_best), fmt_value(p.top1_accuracy_marginal)});
  }
  if (!rows.empty()) {
    rows.push_back({"mean", fmt_value(s.row_entropy), fmt_value(s.row_entropy_normalized),
                    fmt_value(s.top1_accuracy), fmt_value(s.top1_accuracy_best),
                    fmt_value(s.top1_accuracy_marginal)});
    out += format_table({"pathway", "row entropy", "row H/logE", "top-1 acc", "best top-1",
                         "marginal"},
                        rows, {false, true, true, true, true, true});
  }
  return out;
}

}  // namespace

std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = utf8_length(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], static_cast<size_t>(utf8_length(row[c])));
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < width.size(); ++c) {
      s += pad(c < cells.size() ? cells[c] : "", width[c], right[c]) + "|";
    }
    return s + "\n";
  };
  std::string out = line(header) + "|";
  for (size_t c = 0; c < width.size(); ++c) {
    out += std::string(width[c] - (right[c] ? 1 : 0), '-') + (right[c] ? ":" : "") + "|";
  }
  out += "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string checkpoint_label(const CheckpointReport& r) {
  const fs::path p(r.checkpoint);
  const fs::path parent = p.parent_path();
  if (parent.filename() == "checkpoints") {
    return fmt::format("{}@{}", parent.parent_path().filename().string(), r.step);
  }
  return p.filename().string();
}

std::string format_single_report(const CheckpointReport& r) {
  std::string out = fmt::format("moeeval: {} (step {}, {}, losses {}, {} params, {} active)\n",
                                r.checkpoint, r.step, r.arch, r.losses, r.params_total,
                                r.params_active);
  if (!r.ppl.empty()) out += "\n" + ppl_table(r);
  if (!r.tasks.empty()) out += "\n" + task_table(r);
  for (const auto& re : r.routing) out += "\n" + routing_tables(re);
  return out;
}

std::string format_side_by_side(const std::vector<CheckpointReport>& rs) {
  std::vector<std::vector<FlatMetric>> flat;
  std::vector<std::pair<std::string, std::string>> keys;  // (section, name) in first-seen order
  for (const auto& r : rs) {
    flat.push_back(flatten(r));
    for (const auto& m : flat.back()) {
      if (std::find(keys.begin(), keys.end(), std::make_pair(m.section, m.name)) == keys.end()) {
        keys.push_back({m.section, m.name});
      }
    }
  }
  auto lookup = [&](size_t i, const std::pair<std::string, std::string>& k) -> const FlatMetric* {
    for (const auto& m : flat[i]) {
      if (m.section == k.first && m.name == k.second) return &m;
    }
    return nullptr;
  };
  std::vector<std::string> header = {"section", "metric"};
  std::vector<bool> right = {false, false};
  for (size_t i = 0; i < rs.size(); ++i) {
    header.push_back(checkpoint_label(rs[i]) + (i == 0 ? "" : " (Δ)"));
    right.push_back(true);
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : keys) {
    std::vector<std::string> row = {k.first, k.second};
    const FlatMetric* base = lookup(0, k);
    for (size_t i = 0; i < rs.size(); ++i) {
      const FlatMetric* m = lookup(i, k);
      if (!m) {
        row.push_back("-");
        continue;
      }
      std::string cell = fmt_value(m->value);
      if (i > 0 && base && std::isfinite(base->value) && std::isfinite(m->value)) {
        cell += fmt::format(" ({:+.4f})", m->value - base->value);
      }
      row.push_back(cell);
    }
    rows.push_back(row);
  }
  std::string out;
  for (size_t i = 0; i < rs.size(); ++i) {
    out += fmt::format("[{}] {}: {} {}, losses {}\n", i, checkpoint_label(rs[i]), rs[i].checkpoint,
                       rs[i].arch, rs[i].losses);
  }
  return out + format_table(header, rows, right);
}

}  // namespace moe::eval
