// Zero-shot task readers: each turns one task file into a Task whose requests are exactly the
// (context, continuation) pairs lm-evaluation-harness v0.4.x sends for that task, 0-shot
// (docs/model.md §4.2). Every reader checks its input and fails with a
// usage error naming file:line and what was expected (missing field, label out of range, label
// count that does not match the items).
//
// File layout under --task-dir DIR (the layout of data/zeroshot; first existing wins):
//   hellaswag       hellaswag/hellaswag_val.jsonl (original Rowan/hellaswag validation, exact
//                   harness preprocessing), else hellaswag/hellaswag_val_full.txt[.bz2] (the
//                   llama.cpp 6-line conversion; see read_hellaswag_converted for what it loses)
//   piqa            piqa/valid.jsonl + piqa/valid-labels.lst
//   arc_easy        arc_easy/ARC-Easy-Test.jsonl, else arc_easy/ARC-Easy-Dev.jsonl (dev split)
//   arc_challenge   arc_challenge/ARC-Challenge-Test.jsonl, else .../ARC-Challenge-Dev.jsonl
//   openbookqa      openbookqa/test.jsonl
//   boolq           boolq/dev.jsonl (Google original: answer true/false) or boolq/val.jsonl
//                   (SuperGLUE: label 0/1)
//   lambada_openai  lambada_openai/lambada_test.jsonl
//   copa            copa/val.jsonl (SuperGLUE: premise, choice1, choice2, question, label), else
//                   copa/copa.jsonl (MosaicML conversion: query, choices, gold)
//   winogrande      winogrande/dev.jsonl (winogrande_xl dev: sentence, option1, option2, answer)
//   sciq            sciq/test.json (the original JSON array) or sciq/test.jsonl
//   mmlu            mmlu/test/<subject>_test.csv for the 57 subjects (+ mmlu/dev/<subject>_dev.csv
//                   for k-shot): the original CSV layout, no header. "mmlu" expands to the 57
//                   tasks mmlu_<subject>; "mmlu_stem", "mmlu_other", "mmlu_social_sciences",
//                   "mmlu_humanities" to a category's subjects; "mmlu_<subject>" is one subject
//   truthfulqa_mc1, truthfulqa_mc2   truthfulqa/mc_task.json (TruthfulQA's original file)
// Any other task name N is a user task: DIR/N.jsonl, or N itself when it is a path ending in
// .jsonl. A user task has one JSON object per line: {"context": str, "choices": [str, ...],
// "gold": int} and optionally "target_delimiter" (default " "); it is scored like the harness's
// multiple_choice tasks (acc and acc_norm).
#pragma once
#include <string>
#include <vector>

#include "eval/task.h"

namespace moe::eval {

const std::vector<std::string>& builtin_task_names();
bool is_builtin_task(const std::string& name);

// Resolves `name` against `task_dir` (layout above) and reads it. A missing file is a usage
// error that lists the paths that were tried. `num_fewshot` > 0 is accepted only by MMLU (the
// one task here with a few-shot split; the harness fixes TruthfulQA at 0) and is a usage error
// for one task that has none. `split` (moeeval --split) chooses among the splits a task folder
// may hold ("test", "validation" or its aliases "dev"/"val"): arc_easy and arc_challenge (-Test /
// -Dev), openbookqa (test / dev); empty: the first present, test before validation. A split the
// task does not have is a usage error naming its splits.
Task load_task(const std::string& name, const std::string& task_dir, int64_t num_fewshot = 0,
               const std::string& split = "");
// As load_task, but a group name ("mmlu", "mmlu_stem", ...) expands to its subtasks.
std::vector<Task> load_tasks(const std::string& name, const std::string& task_dir,
                             int64_t num_fewshot = 0, const std::string& split = "");
bool supports_fewshot(const std::string& name);  // mmlu and its groups and subjects

// MMLU: the 57 subjects with the harness's category (stem, other, social_sciences, humanities).
struct MmluSubject {
  const char* name;
  const char* category;
};
const std::vector<MmluSubject>& mmlu_subjects();
// "The following are multiple choice questions (with answers) about <subject, _ -> space>.\n\n"
std::string mmlu_description(const std::string& subject);
// question.strip() + "\nA. " + a + "\nB. " + b + "\nC. " + c + "\nD. " + d + "\nAnswer:"
std::string mmlu_question_block(const std::string& question, const std::string& a,
                                 const std::string& b, const std::string& c, const std::string& d);
// One subject; dev_path is read only for num_fewshot > 0 (its first k rows, sampler first_n).
Task read_mmlu_subject(const std::string& subject, const std::string& test_path,
                       const std::string& dev_path, int64_t num_fewshot);
// TruthfulQA from mc_task.json: variant 1 = truthfulqa_mc1 (acc, the true answer is choice 0),
// 2 = truthfulqa_mc2 (probability mass on the true answers). Context: the harness's six-pair QA
// preamble + "\n\nQ: " + question + "\nA:"; continuations " " + each key in file order.
Task read_truthfulqa(const std::string& path, int variant);

// The readers, one per file format.
Task read_hellaswag_jsonl(const std::string& path);
Task read_hellaswag_converted(const std::string& path);
Task read_piqa(const std::string& jsonl_path, const std::string& labels_path);
Task read_arc(const std::string& task_name, const std::string& path, const std::string& split);
Task read_openbookqa(const std::string& path);
Task read_boolq(const std::string& path);
Task read_lambada(const std::string& path);
Task read_copa(const std::string& path);
Task read_winogrande(const std::string& path);
Task read_sciq(const std::string& path);
Task read_user_task(const std::string& name, const std::string& path);

// HellaSwag's preprocess() (hellaswag/utils.py): strip, " [title]" -> ". ", drop every
// [bracketed] span (non-greedy, not across a newline), then one pass of "  " -> " ".
std::string hellaswag_preprocess(const std::string& text);

}  // namespace moe::eval
