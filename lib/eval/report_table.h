// moeeval's terminal tables. One checkpoint: the harness's results table for the zero-shot
// tasks (Tasks | Version | Filter | n-shot | Metric | Value | Stderr), a perplexity table, and
// the routing statistics per MoE layer and per adjacent layer pair. Several checkpoints: one
// side-by-side table of every metric, each column after the first with its delta against the
// first checkpoint.
#pragma once
#include <string>
#include <vector>

#include "eval/eval_report.h"

namespace moe::eval {

// A markdown-style table; `right` marks the right-aligned columns.
std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right);

std::string format_single_report(const CheckpointReport& r);
std::string format_side_by_side(const std::vector<CheckpointReport>& rs);
// "run@step" (or the directory name) for column headers.
std::string checkpoint_label(const CheckpointReport& r);

}  // namespace moe::eval
