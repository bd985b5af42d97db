// Task name -> file(s) under --task-dir -> reader (layout documented in task_readers.h).
#include <algorithm>
#include <filesystem>
#include <map>
#include <utility>

#include "core/error.h"
#include "eval/task_readers.h"
#include "eval/text_utils.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

// The first of `candidates` (relative to dir) that exists; a usage error listing them otherwise.
std::string find_file(const std::string& task, const std::string& dir,
                      const std::vector<std::string>& candidates) {
  std::string tried;
  for (const auto& c : candidates) {
    const fs::path p = fs::path(dir) / c;
    if (fs::is_regular_file(p)) return p.string();
    tried += (tried.empty() ? "" : ", ") + p.string();
  }
  MOE_USAGE_FAIL("task '{}': task file not found; looked for {} (pass --task-dir DIR holding "
                 "the task files, e.g. data/zeroshot)",
                 task, tried);
}

const MmluSubject* find_mmlu_subject(const std::string& task_name) {
  for (const auto& s : mmlu_subjects()) {
    if (task_name == std::string("mmlu_") + s.name) return &s;
  }
  return nullptr;
}

bool is_mmlu_category(const std::string& name) {
  return name == "mmlu_stem" || name == "mmlu_other" || name == "mmlu_social_sciences" ||
         name == "mmlu_humanities";
}

// The splits a built-in task may have under --task-dir, in the order they are preferred when
// --split is not given, each with its candidate files (relative to the task dir).
struct SplitFiles {
  std::string split;  // the harness's name: "test", "validation", "train"
  std::vector<std::string> files;
};

std::string canonical_split(const std::string& s) {
  if (s == "dev" || s == "val" || s == "valid") return "validation";
  return s;
}

// The file of `split` (or of the first split present when split is empty), and the split found.
std::pair<std::string, std::string> find_split_file(const std::string& task,
                                                    const std::string& dir,
                                                    const std::string& split,
                                                    const std::vector<SplitFiles>& table) {
  const std::string want = canonical_split(split);
  std::string names;
  for (const auto& sf : table) {
    names += (names.empty() ? "" : ", ") + sf.split;
    if (!want.empty() && sf.split != want) continue;
    if (want.empty()) {
      for (const auto& c : sf.files) {
        if (fs::is_regular_file(fs::path(dir) / c)) return {(fs::path(dir) / c).string(), sf.split};
      }
      continue;
    }
    return {find_file(task, dir, sf.files), sf.split};
  }
  if (!want.empty()) {
    MOE_USAGE_FAIL("task '{}': --split {}: no such split (its splits: {})", task, split, names);
  }
  std::vector<std::string> all;
  for (const auto& sf : table) all.insert(all.end(), sf.files.begin(), sf.files.end());
  return {find_file(task, dir, all), ""};  // fails, listing every candidate
}

}  // namespace

const std::vector<std::string>& builtin_task_names() {
  static const std::vector<std::string> names = {
      "hellaswag", "piqa",  "arc_easy", "arc_challenge", "openbookqa",
      "boolq",     "lambada_openai", "copa", "winogrande", "sciq",
      "mmlu",      "truthfulqa_mc1", "truthfulqa_mc2"};
  return names;
}

bool is_builtin_task(const std::string& name) {
  const auto& n = builtin_task_names();
  return std::find(n.begin(), n.end(), name) != n.end() || supports_fewshot(name);
}

bool supports_fewshot(const std::string& name) {
  return name == "mmlu" || is_mmlu_category(name) || find_mmlu_subject(name) != nullptr;
}

std::vector<Task> load_tasks(const std::string& name, const std::string& dir, int64_t num_fewshot,
                             const std::string& split) {
  std::vector<Task> out;
  if (name == "mmlu" || is_mmlu_category(name)) {
    for (const auto& s : mmlu_subjects()) {
      if (name == "mmlu" || name == std::string("mmlu_") + s.category) {
        out.push_back(load_task(std::string("mmlu_") + s.name, dir, num_fewshot, split));
      }
    }
    return out;
  }
  out.push_back(load_task(name, dir, num_fewshot, split));
  return out;
}

namespace {

Task read_task(const std::string& name, const std::string& dir, int64_t num_fewshot,
               const std::string& split) {
  MOE_USAGE_CHECK(num_fewshot >= 0, "--num-fewshot must be >= 0, got {}", num_fewshot);
  MOE_USAGE_CHECK(num_fewshot == 0 || supports_fewshot(name),
                  "task '{}': --num-fewshot {} is not supported (only mmlu has a few-shot split "
                  "here; the other tasks are scored 0-shot as the harness's YAMLs define them)",
                  name, num_fewshot);
  // Tasks with one split: --split must name it (or be empty).
  auto only = [&](const char* s) {
    MOE_USAGE_CHECK(split.empty() || canonical_split(split) == s, "task '{}': --split {}: no "
                    "such split (its split: {})", name, split, s);
  };
  if (const MmluSubject* s = find_mmlu_subject(name)) {
    only("test");
    const std::string subject = s->name;
    const std::string test = find_file(name, dir, {"mmlu/test/" + subject + "_test.csv"});
    const std::string dev =
        num_fewshot > 0 ? find_file(name, dir, {"mmlu/dev/" + subject + "_dev.csv"}) : "";
    return read_mmlu_subject(subject, test, dev, num_fewshot);
  }
  if (name == "truthfulqa_mc1" || name == "truthfulqa_mc2") {
    only("validation");
    return read_truthfulqa(find_file(name, dir, {"truthfulqa/mc_task.json"}),
                           name == "truthfulqa_mc1" ? 1 : 2);
  }
  MOE_USAGE_CHECK(name != "mmlu" && !is_mmlu_category(name),
                  "'{}' is a group of tasks: load it with load_tasks", name);
  if (name == "arc_easy" || name == "arc_challenge") {
    const std::string stem = name == "arc_easy" ? "arc_easy/ARC-Easy" : "arc_challenge/ARC-Challenge";
    const auto [f, found] = find_split_file(name, dir, split, {{"test", {stem + "-Test.jsonl"}},
                                                               {"validation", {stem + "-Dev.jsonl"}}});
    Task t = read_arc(name, f, found == "test" ? "test" : "dev");
    if (found != "test") t.note = "dev split (the harness scores the test split)";
    return t;
  }
  if (name == "openbookqa") {
    const auto [f, found] = find_split_file(name, dir, split, {{"test", {"openbookqa/test.jsonl"}},
                                                               {"validation", {"openbookqa/dev.jsonl"}}});
    Task t = read_openbookqa(f);
    t.split = found;
    if (found != "test") t.note = "validation split (the harness scores the test split)";
    return t;
  }
  if (is_builtin_task(name)) {
    static const std::map<std::string, const char*> single = {
        {"hellaswag", "validation"}, {"piqa", "validation"}, {"boolq", "validation"},
        {"lambada_openai", "test"}, {"copa", "validation"}, {"winogrande", "validation"},
        {"sciq", "test"}};
    if (const auto it = single.find(name); it != single.end()) only(it->second);
  }
  if (name == "hellaswag") {
    const std::string f = find_file(name, dir,
                                    {"hellaswag/hellaswag_val.jsonl",
                                     "hellaswag/hellaswag_val_full.txt",
                                     "hellaswag/hellaswag_val_full.txt.bz2"});
    return ends_with(f, ".jsonl") ? read_hellaswag_jsonl(f) : read_hellaswag_converted(f);
  }
  if (name == "piqa") {
    return read_piqa(find_file(name, dir, {"piqa/valid.jsonl"}),
                     find_file(name, dir, {"piqa/valid-labels.lst"}));
  }
  if (name == "boolq") return read_boolq(find_file(name, dir, {"boolq/dev.jsonl", "boolq/val.jsonl"}));
  if (name == "lambada_openai") {
    return read_lambada(find_file(name, dir, {"lambada_openai/lambada_test.jsonl"}));
  }
  if (name == "copa") return read_copa(find_file(name, dir, {"copa/val.jsonl", "copa/copa.jsonl"}));
  if (name == "winogrande") return read_winogrande(find_file(name, dir, {"winogrande/dev.jsonl"}));
  if (name == "sciq") return read_sciq(find_file(name, dir, {"sciq/test.json", "sciq/test.jsonl"}));
  // A user task: a .jsonl path, or DIR/<name>.jsonl (one split: --split does not apply).
  MOE_USAGE_CHECK(split.empty(), "task '{}': --split {}: user tasks have one file and no splits",
                  name, split);
  if (ends_with(name, ".jsonl")) {
    MOE_USAGE_CHECK(fs::is_regular_file(name), "user task file {} not found", name);
    return read_user_task(fs::path(name).stem().string(), name);
  }
  const fs::path user = fs::path(dir) / (name + ".jsonl");
  std::string builtins;
  for (const auto& b : builtin_task_names()) builtins += (builtins.empty() ? "" : ", ") + b;
  MOE_USAGE_CHECK(fs::is_regular_file(user),
                  "unknown task '{}': not a built-in task ({}) and no user task file {}", name,
                  builtins, user.string());
  return read_user_task(name, user.string());
}

// An empty continuation scores log-likelihood 0, the largest possible, so an empty choice would
// always win: a task file with one is bad input.
void check_requests(const Task& t) {
  for (size_t d = 0; d < t.docs.size(); ++d) {
    const auto& reqs = t.docs[d].requests;
    for (size_t i = 0; i < reqs.size(); ++i) {
      MOE_USAGE_CHECK(reqs[i].continuation.find_first_not_of(" \t\r\n") != std::string::npos,
                      "{}: document {} of task {}: {} {} is empty (an empty continuation scores "
                      "log-likelihood 0 and would always win); expected non-empty text",
                      t.source, d + 1, t.name,
                      t.output == TaskOutput::kMultipleChoice ? "choice" : "continuation", i + 1);
    }
  }
}

}  // namespace

Task load_task(const std::string& name, const std::string& dir, int64_t num_fewshot,
               const std::string& split) {
  Task t = read_task(name, dir, num_fewshot, split);
  check_requests(t);
  return t;
}

}  // namespace moe::eval
