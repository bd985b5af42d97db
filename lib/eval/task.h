// A zero-shot task as lm-evaluation-harness v0.4.x builds it: documents, each with its
// log-likelihood requests (context, continuation) already rendered with the task's prompt, and
// the gold index. How requests are scored depends on the task's output type:
//   kMultipleChoice  one request per choice (ctx, " " + choice_i); acc, and acc_norm when the
//                    task reports it (ll / code points of choice_i, without the delimiter)
//   kMultipleInput   Winogrande's partial scoring: one request per context (ctx_i, " " + suffix);
//                    acc only
//   kLoglikelihood   LAMBADA: one request (ctx, " " + last word); acc = every continuation token
//                    is the greedy argmax, perplexity = exp(-mean_doc ll)
// A multiple-choice task's per-document score is acc (argmax == gold) unless its metric is kMc2
// (TruthfulQA MC2): the probability mass exp(ll_i) / sum_j exp(ll_j) summed over the choices
// whose label is 1 (the label mask of harness v0.4.9 and later), reported as "acc".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe::eval {

enum class TaskOutput { kMultipleChoice, kMultipleInput, kLoglikelihood };
enum class TaskMetric { kAccuracy, kMc2 };

struct LoglikRequest {
  std::string context;
  std::string continuation;
};

struct TaskDoc {
  std::vector<LoglikRequest> requests;
  std::vector<double> choice_chars;  // kMultipleChoice: code points of each choice (acc_norm)
  int64_t gold = 0;                  // index into requests (0 for kLoglikelihood)
  std::vector<int> labels;           // kMc2: 1 for a true choice, 0 for a false one
  std::vector<std::string> fields;   // MMLU: the CSV record as parsed (checked by --dump-requests)
};

struct Task {
  std::string name;         // "piqa", or the file stem of a user task
  TaskOutput output = TaskOutput::kMultipleChoice;
  TaskMetric metric = TaskMetric::kAccuracy;
  bool reports_acc_norm = false;
  int64_t num_fewshot = 0;  // examples in each context (MMLU's dev shots), for n-shot
  std::string dataset_name; // the harness's dataset_name (an MMLU subject), or empty
  std::string description;  // the harness's description (MMLU), or empty
  std::vector<std::vector<std::string>> shot_fields;  // MMLU: the dev records of the shots
  double version = 1.0;     // the harness YAML's metadata.version
  std::string split;        // the split the file holds ("validation", "test", "dev", "user")
  std::string source;       // the file(s) read
  std::string note;         // a deviation from the harness worth printing (or empty)
  std::vector<TaskDoc> docs;
};

}  // namespace moe::eval
