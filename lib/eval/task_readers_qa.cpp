// Readers for the question-answering multiple-choice tasks: piqa, arc_easy / arc_challenge,
// openbookqa, boolq, sciq, copa, and the generic user task. Prompts follow the harness YAMLs
// listed in docs/model.md §4.2.
#include <fstream>

#include "core/error.h"
#include "eval/task_files.h"
#include "eval/task_readers.h"
#include "eval/text_utils.h"

namespace moe::eval {
namespace {

std::string where(const std::string& path, int64_t line) {
  return path + ":" + std::to_string(line);
}

// A multiple-choice document: context, " " + choice_i (the harness's target_delimiter).
TaskDoc mc_doc(const std::string& context, const std::vector<std::string>& choices, int64_t gold,
               const std::string& at, const std::string& delimiter = " ") {
  MOE_USAGE_CHECK(choices.size() >= 2, "{}: expected at least 2 choices, found {}", at,
                  choices.size());
  MOE_USAGE_CHECK(gold >= 0 && gold < static_cast<int64_t>(choices.size()),
                  "{}: gold label {} out of range for {} choices (expected 0..{})", at, gold,
                  choices.size(), choices.size() - 1);
  TaskDoc doc;
  for (const auto& c : choices) {
    doc.requests.push_back({context, delimiter + c});
    doc.choice_chars.push_back(static_cast<double>(utf8_length(c)));
  }
  doc.gold = gold;
  return doc;
}

Task make_task(const std::string& name, const std::string& source, const std::string& split,
               bool acc_norm, double version = 1.0) {
  Task t;
  t.name = name;
  t.source = source;
  t.split = split;
  t.reports_acc_norm = acc_norm;
  t.version = version;
  return t;
}

// ARC / OpenBookQA schema: {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}.
struct ArcItem {
  std::string stem;
  std::vector<std::string> texts;
  int64_t gold = 0;
};

ArcItem parse_arc_item(const JsonLine& jl, const std::string& path, bool lstrip_key) {
  const std::string at = where(path, jl.line);
  auto q = jl.value.find("question");
  MOE_USAGE_CHECK(q != jl.value.end() && q->is_object(),
                  "{}: missing object field 'question' (expected the ARC/OpenBookQA schema)", at);
  ArcItem item;
  item.stem = json_string(*q, "stem", at + " question");
  auto ch = q->find("choices");
  MOE_USAGE_CHECK(ch != q->end() && ch->is_array(), "{}: missing list 'question.choices'", at);
  std::vector<std::string> labels;
  for (const auto& c : *ch) {
    MOE_USAGE_CHECK(c.is_object(), "{}: each choice should be an object {{text, label}}", at);
    item.texts.push_back(json_string(c, "text", at + " choice"));
    labels.push_back(json_string(c, "label", at + " choice"));
  }
  std::string key = json_string(jl.value, "answerKey", at);
  if (lstrip_key) key = py_lstrip(key);
  item.gold = -1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == key) item.gold = static_cast<int64_t>(i);
  }
  MOE_USAGE_CHECK(item.gold >= 0, "{}: answerKey '{}' is not one of the choice labels", at, key);
  return item;
}

}  // namespace

Task read_piqa(const std::string& jsonl_path, const std::string& labels_path) {
  Task task = make_task("piqa", jsonl_path + " + " + labels_path, "validation", true);
  const std::vector<JsonLine> items = read_jsonl(jsonl_path);
  std::vector<std::string> label_lines = read_task_lines(labels_path);
  while (!label_lines.empty() && py_strip(label_lines.back()).empty()) label_lines.pop_back();
  MOE_USAGE_CHECK(label_lines.size() == items.size(),
                  "{}: {} labels for the {} items of {} (expected one label per item)",
                  labels_path, label_lines.size(), items.size(), jsonl_path);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = where(jsonl_path, items[i].line);
    const std::string label = py_strip(label_lines[i]);
    MOE_USAGE_CHECK(label == "0" || label == "1", "{}: label '{}' (expected 0 or 1)",
                    where(labels_path, static_cast<int64_t>(i) + 1), label);
    const std::string ctx = "Question: " + json_string(items[i].value, "goal", at) + "\nAnswer:";
    task.docs.push_back(mc_doc(ctx,
                               {json_string(items[i].value, "sol1", at),
                                json_string(items[i].value, "sol2", at)},
                               label == "1" ? 1 : 0, at));
  }
  return task;
}

Task read_arc(const std::string& task_name, const std::string& path, const std::string& split) {
  Task task = make_task(task_name, path, split, true);
  for (const JsonLine& jl : read_jsonl(path)) {
    const ArcItem item = parse_arc_item(jl, path, false);
    task.docs.push_back(mc_doc("Question: " + item.stem + "\nAnswer:", item.texts, item.gold,
                               where(path, jl.line)));
  }
  return task;
}

Task read_openbookqa(const std::string& path) {
  Task task = make_task("openbookqa", path, "test", true);
  for (const JsonLine& jl : read_jsonl(path)) {
    const ArcItem item = parse_arc_item(jl, path, true);
    task.docs.push_back(mc_doc(item.stem, item.texts, item.gold, where(path, jl.line)));
  }
  return task;
}

Task read_boolq(const std::string& path) {
  Task task = make_task("boolq", path, "validation", false, 2.0);
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    int64_t label = 0;
    if (jl.value.contains("answer")) {  // Google's release: "answer": true/false
      const auto& a = jl.value["answer"];
      MOE_USAGE_CHECK(a.is_boolean(), "{}: field 'answer' should be true/false, found {}", at,
                      clip_text(a.dump()));
      label = a.get<bool>() ? 1 : 0;
    } else {  // SuperGLUE: "label": 0/1
      label = json_int(jl.value, "label", at);
    }
    const std::string ctx = json_string(jl.value, "passage", at) + "\nQuestion: " +
                            json_string(jl.value, "question", at) + "?\nAnswer:";
    task.docs.push_back(mc_doc(ctx, {"no", "yes"}, label, at));
  }
  return task;
}

Task read_sciq(const std::string& path) {
  Task task = make_task("sciq", path, "test", true);
  std::vector<JsonLine> items;
  if (ends_with(path, ".jsonl")) {
    items = read_jsonl(path);
  } else {  // the original release: one JSON array
    nlohmann::json arr;
    try {
      arr = nlohmann::json::parse(read_task_file(path));
    } catch (const nlohmann::json::exception& e) {
      MOE_USAGE_FAIL("{}: not valid JSON ({}); expected the SciQ JSON array", path, clip_text(e.what()));
    }
    MOE_USAGE_CHECK(arr.is_array() && !arr.empty(), "{}: expected a non-empty JSON array", path);
    for (size_t i = 0; i < arr.size(); ++i) items.push_back({static_cast<int64_t>(i) + 1, arr[i]});
  }
  for (const JsonLine& jl : items) {
    const std::string at = ends_with(path, ".jsonl") ? where(path, jl.line)
                                                    : path + " item " + std::to_string(jl.line);
    const std::string ctx = py_lstrip(json_string(jl.value, "support", at)) + "\nQuestion: " +
                            json_string(jl.value, "question", at) + "\nAnswer:";
    task.docs.push_back(mc_doc(ctx,
                               {json_string(jl.value, "distractor1", at),
                                json_string(jl.value, "distractor2", at),
                                json_string(jl.value, "distractor3", at),
                                json_string(jl.value, "correct_answer", at)},
                               3, at));
  }
  return task;
}

// COPA: ctx = premise[:-1] + " because"/" therefore"; choices " " + lower-first(choice), so the
// continuation carries two spaces (the v0.4 YAML quirk, kept to match v0.4.x numbers).
Task read_copa(const std::string& path) {
  Task task = make_task("copa", path, "validation", false);
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    std::string ctx;
    std::vector<std::string> raw;
    int64_t gold = 0;
    if (jl.value.contains("premise")) {  // SuperGLUE schema
      const std::string premise = py_strip(json_string(jl.value, "premise", at));
      const std::string question = json_string(jl.value, "question", at);
      MOE_USAGE_CHECK(question == "cause" || question == "effect",
                      "{}: question '{}' (expected cause or effect)", at, question);
      MOE_USAGE_CHECK(!premise.empty(), "{}: empty premise", at);
      const std::u32string p = utf8_to_u32(premise);
      ctx = u32_to_utf8(p.substr(0, p.size() - 1)) +
            (question == "cause" ? " because" : " therefore");
      raw = {json_string(jl.value, "choice1", at), json_string(jl.value, "choice2", at)};
      gold = json_int(jl.value, "label", at);
    } else {  // MosaicML: query = premise without its final period + ", because"/", therefore"
      const std::string query = json_string(jl.value, "query", at);
      const bool cause = ends_with(query, ", because");
      MOE_USAGE_CHECK(cause || ends_with(query, ", therefore"),
                      "{}: query should end with ', because' or ', therefore': \"{}\"", at, query);
      const size_t cut = query.size() - (cause ? 9 : 11);
      ctx = query.substr(0, cut) + (cause ? " because" : " therefore");
      raw = json_string_array(jl.value, "choices", at);
      MOE_USAGE_CHECK(raw.size() == 2, "{}: COPA has 2 choices, found {}", at, raw.size());
      gold = json_int(jl.value, "gold", at);
    }
    std::vector<std::string> choices;
    for (const auto& c : raw) choices.push_back(" " + py_lower_first(c));
    task.docs.push_back(mc_doc(ctx, choices, gold, at));
  }
  return task;
}

Task read_user_task(const std::string& name, const std::string& path) {
  Task task = make_task(name, path, "user", true);
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    std::string delimiter = " ";
    if (jl.value.contains("target_delimiter")) {
      delimiter = json_string(jl.value, "target_delimiter", at);
    }
    task.docs.push_back(mc_doc(json_string(jl.value, "context", at),
                               json_string_array(jl.value, "choices", at),
                               json_int(jl.value, "gold", at), at, delimiter));
  }
  return task;
}

}  // namespace moe::eval
