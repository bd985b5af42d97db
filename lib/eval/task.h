// A zero-shot task as lm-evaluation-harness v0.4.x builds it: documents, each with its
// log-likelihood requests (context, continuation) already rendered with the task's prompt, and
// the gold index. How requests are scored depends on the task's output type:
//   kMultipleChoice  one request per choice (ctx, " " + choice_i); acc, and acc_norm when the
//                    task reports it (ll / code points of choice_i, without the delimiter)
//   kMultipleInput   Winogrande's partial scoring: one request per context (ctx_i, " " + suffix);
//                    acc only
//   kLoglikelihood   LAMBADA: one request (ctx, " " + last word); acc = every continuation token
//                    is the greedy argmax, perplexity = exp(-mean_doc ll)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe::eval {

enum class TaskOutput { kMultipleChoice, kMultipleInput, kLoglikelihood };

struct LoglikRequest {
  std::string context;
  std::string continuation;
};

struct TaskDoc {
  std::vector<LoglikRequest> requests;
  std::vector<double> choice_chars;  // kMultipleChoice: code points of each choice (acc_norm)
  int64_t gold = 0;                  // index into requests (0 for kLoglikelihood)
};

struct Task {
  std::string name;         // "piqa", or the file stem of a user task
  TaskOutput output = TaskOutput::kMultipleChoice;
  bool reports_acc_norm = false;
  double version = 1.0;     // the harness YAML's metadata.version
  std::string split;        // the split the file holds ("validation", "test", "dev", "user")
  std::string source;       // the file(s) read
  std::string note;         // a deviation from the harness worth printing (or empty)
  std::vector<TaskDoc> docs;
};

}  // namespace moe::eval
