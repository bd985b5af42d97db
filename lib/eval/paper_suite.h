// The paper's zero-shot suite (arXiv 2602.14159: MMLU, ARC-Easy, ARC-Challenge, PIQA, HellaSwag,
// TruthfulQA-MC2) as one table: a row per checkpoint with the six scores and their mean, under
// the rows of the paper's own numbers where they are known, for orientation only (the paper's
// models are 0.4B-7B parameters trained on 30-50B C4 tokens).
//
// Metric per column: acc for every task (mmlu's size-weighted acc; TruthfulQA's mc2 "acc",
// the probability mass on the true answers). Which metric the paper reports is not known; its
// ARC-Challenge values (0.198 / 0.204) lie below the 0.25 of chance, which fits acc (raw
// log-likelihood favours short wrong answers) rather than acc_norm.
//
// The only paper numbers known are ARC-Challenge for Vanilla L_lb (0.204) and Vanilla
// L_lb,z,sp,cp (0.198), ICLR version Table 3 (model size not known); every other cell is "?".
// A task whose file is missing (ARC-Challenge's test set is not shipped in data/) shows
// "missing", and the mean is then over the tasks present, labelled "(k of 6)".
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/eval_report.h"

namespace moe::eval {

struct PaperColumn {
  std::string label;   // "MMLU"
  std::string task;    // task or group name in a report: "mmlu"
  std::string load;    // the name to load: "mmlu"
  std::string metric;  // "acc"
};
const std::vector<PaperColumn>& paper_columns();

// The score of one column in a report (nullopt when the task did not run).
std::optional<double> paper_score(const CheckpointReport& r, const PaperColumn& c);

std::string format_paper_table(const std::vector<CheckpointReport>& rs);
// {"columns": [...], "scores": {label: value|null}, "average": x, "tasks_present": k}
nlohmann::json paper_table_json(const CheckpointReport& r);

}  // namespace moe::eval
