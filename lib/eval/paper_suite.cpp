// The paper's table (see paper_suite.h).
#include "eval/paper_suite.h"

#include <spdlog/fmt/fmt.h>

#include "eval/report_table.h"

namespace moe::eval {
namespace {

struct PaperRow {
  const char* label;
  std::vector<std::optional<double>> scores;  // per column
};

// arXiv 2602.14159 / its ICLR version, Table 3: the only zero-shot numbers of the paper known to
// the project (ARC-Challenge, quoted by a reviewer); the full table has not been seen.
const std::vector<PaperRow>& paper_rows() {
  static const std::vector<PaperRow> rows = {
      {"paper: Vanilla L_lb (ICLR Tab. 3)", {std::nullopt, std::nullopt, 0.204, std::nullopt,
                                             std::nullopt, std::nullopt}},
      {"paper: Vanilla L_lb,z,sp,cp (ICLR Tab. 3)", {std::nullopt, std::nullopt, 0.198,
                                                     std::nullopt, std::nullopt, std::nullopt}},
  };
  return rows;
}

}  // namespace

const std::vector<PaperColumn>& paper_columns() {
  static const std::vector<PaperColumn> cols = {
      {"MMLU", "mmlu", "mmlu", "acc"},
      {"ARC-E", "arc_easy", "arc_easy", "acc"},
      {"ARC-C", "arc_challenge", "arc_challenge", "acc"},
      {"PIQA", "piqa", "piqa", "acc"},
      {"HellaSwag", "hellaswag", "hellaswag", "acc"},
      {"TruthfulQA-MC2", "truthfulqa_mc2", "truthfulqa_mc2", "acc"},
  };
  return cols;
}

std::optional<double> paper_score(const CheckpointReport& r, const PaperColumn& c) {
  for (const GroupResult& g : r.groups) {
    if (g.name == c.task) {
      if (const MetricValue* m = g.find(c.metric)) return m->value;
    }
  }
  for (const TaskResult& t : r.tasks) {
    if (t.name == c.task) {
      if (const MetricValue* m = t.find(c.metric)) return m->value;
    }
  }
  return std::nullopt;
}

nlohmann::json paper_table_json(const CheckpointReport& r) {
  nlohmann::json cols = nlohmann::json::array(), scores = nlohmann::json::object();
  double sum = 0;
  int n = 0;
  for (const PaperColumn& c : paper_columns()) {
    cols.push_back({{"label", c.label}, {"task", c.task}, {"metric", c.metric}});
    const auto v = paper_score(r, c);
    scores[c.label] = v ? nlohmann::json(*v) : nlohmann::json();
    if (v) {
      sum += *v;
      ++n;
    }
  }
  return {{"columns", cols},
          {"scores", scores},
          {"average", n > 0 ? nlohmann::json(sum / n) : nlohmann::json()},
          {"tasks_present", n}};
}

std::string format_paper_table(const std::vector<CheckpointReport>& rs) {
  const auto& cols = paper_columns();
  std::vector<std::string> header = {"model"};
  std::vector<bool> right = {false};
  for (const auto& c : cols) {
    header.push_back(c.label);
    right.push_back(true);
  }
  header.push_back("average");
  right.push_back(true);
  std::vector<std::vector<std::string>> rows;
  for (const PaperRow& p : paper_rows()) {
    std::vector<std::string> row = {p.label};
    for (const auto& v : p.scores) row.push_back(v ? fmt::format("{:.3f}", *v) : "?");
    row.push_back("?");
    rows.push_back(row);
  }
  for (const CheckpointReport& r : rs) {
    std::vector<std::string> row = {checkpoint_label(r)};
    double sum = 0;
    int n = 0;
    for (const auto& c : cols) {
      const auto v = paper_score(r, c);
      row.push_back(v ? fmt::format("{:.4f}", *v) : "missing");
      if (v) {
        sum += *v;
        ++n;
      }
    }
    if (n == 0) {
      row.push_back("-");
    } else if (n == static_cast<int>(cols.size())) {
      row.push_back(fmt::format("{:.4f}", sum / n));
    } else {
      row.push_back(fmt::format("{:.4f} ({} of {})", sum / n, n, cols.size()));
    }
    rows.push_back(row);
  }
  std::string out = "The paper's zero-shot suite (acc; MMLU size-weighted; TruthfulQA mc2)\n";
  out += format_table(header, rows, right);
  out += "  paper rows: only ARC-C is known (ICLR version Table 3, model size not given); \"?\" = "
         "not published in a form we have. For orientation only: the paper's models are "
         "0.4B-7B parameters trained on 30-50B tokens.\n";
  return out;
}

}  // namespace moe::eval
