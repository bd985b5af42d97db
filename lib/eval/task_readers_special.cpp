// Readers for the tasks with their own processing: hellaswag (preprocess, two file formats),
// lambada_openai (loglikelihood of the last word) and winogrande (partial scoring).
#include "core/error.h"
#include "eval/task_files.h"
#include "eval/task_readers.h"
#include "eval/text_utils.h"

namespace moe::eval {
namespace {

std::string where(const std::string& path, int64_t line) {
  return path + ":" + std::to_string(line);
}

// re.sub(r"\[.*?\]", "", text): at each '[' take the nearest ']' on the same line.
std::string remove_bracketed(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '[') {
      const size_t close = text.find_first_of("]\n", i + 1);
      if (close != std::string::npos && text[close] == ']') {
        i = close + 1;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

TaskDoc hellaswag_doc(const std::string& query, const std::vector<std::string>& endings,
                      int64_t gold, const std::string& at) {
  MOE_USAGE_CHECK(endings.size() == 4, "{}: HellaSwag has 4 endings, found {}", at,
                  endings.size());
  MOE_USAGE_CHECK(gold >= 0 && gold < 4, "{}: label {} (expected 0..3)", at, gold);
  TaskDoc doc;
  for (const auto& e : endings) {
    const std::string choice = hellaswag_preprocess(e);
    doc.requests.push_back({query, " " + choice});
    doc.choice_chars.push_back(static_cast<double>(utf8_length(choice)));
  }
  doc.gold = gold;
  return doc;
}

Task hellaswag_task(const std::string& path) {
  Task t;
  t.name = "hellaswag";
  t.source = path;
  t.split = "validation";
  t.reports_acc_norm = true;
  return t;
}

bool ends_sentence(const std::string& s) {
  return !s.empty() && (s.back() == '.' || s.back() == '!' || s.back() == '?');
}

}  // namespace

std::string hellaswag_preprocess(const std::string& text) {
  std::string t = py_strip(text);
  t = py_replace(t, " [title]", ". ");
  t = remove_bracketed(t);
  return py_replace(t, "  ", " ");
}

Task read_hellaswag_jsonl(const std::string& path) {
  Task task = hellaswag_task(path);
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    const std::string ctx = json_string(jl.value, "ctx_a", at) + " " +
                            py_capitalize(json_string(jl.value, "ctx_b", at));
    const std::string query =
        hellaswag_preprocess(json_string(jl.value, "activity_label", at) + ": " + ctx);
    task.docs.push_back(hellaswag_doc(query, json_string_array(jl.value, "endings", at),
                                      json_int(jl.value, "label", at), at));
  }
  return task;
}

// The llama.cpp conversion: 6 lines per item (activity_label + ": " + ctx, label, 4 endings).
// It joined ctx_a and ctx_b without the harness's ctx_b.capitalize(), so the split point is
// lost. We reconstruct it: ctx_b is taken to be the text after the last ". " / "! " / "? " when
// the context does not end a sentence, and its first letter is upper-cased (in this file no such
// fragment has an upper-case letter after its first, so capitalize() reduces to that). Contexts
// that end a sentence are taken to have an empty ctx_b. This matches the harness wherever ctx_a
// ends a sentence and ctx_b does not, which is the structure of HellaSwag's contexts; the exact
// path is the original jsonl (read_hellaswag_jsonl).
Task read_hellaswag_converted(const std::string& path) {
  Task task = hellaswag_task(path);
  task.note = "converted llama.cpp file: ctx_b.capitalize() reconstructed";
  std::vector<std::string> lines = read_task_lines(path);
  for (auto& l : lines) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
  }
  MOE_USAGE_CHECK(!lines.empty(), "{}: empty file", path);
  MOE_USAGE_CHECK(lines.size() % 6 == 0,
                  "{}: {} lines, expected 6 per item (context, label, 4 endings); the last item "
                  "starting at line {} is incomplete",
                  path, lines.size(), lines.size() / 6 * 6 + 1);
  for (size_t i = 0; i < lines.size(); i += 6) {
    const std::string at = where(path, static_cast<int64_t>(i) + 1);
    std::string query = lines[i];
    const size_t colon = query.find(": ");
    MOE_USAGE_CHECK(colon != std::string::npos,
                    "{}: expected \"activity_label: context\", found \"{}\"", at, query);
    if (!ends_sentence(query)) {
      size_t frag = colon + 2;
      for (const char* stop : {". ", "! ", "? "}) {
        const size_t p = query.rfind(stop);
        if (p != std::string::npos && p >= colon + 2) frag = std::max(frag, p + 2);
      }
      query = query.substr(0, frag) + py_capitalize(query.substr(frag, 1)) + query.substr(frag + 1);
    }
    const std::string label = py_strip(lines[i + 1]);
    MOE_USAGE_CHECK(label.size() == 1 && label[0] >= '0' && label[0] <= '3',
                    "{}: label '{}' (expected a single digit 0..3 on the line after each context)",
                    where(path, static_cast<int64_t>(i) + 2), label);
    task.docs.push_back(hellaswag_doc(hellaswag_preprocess(query),
                                      {lines[i + 2], lines[i + 3], lines[i + 4], lines[i + 5]},
                                      label[0] - '0', at));
  }
  return task;
}

// LAMBADA (OpenAI): ctx = text.split(' ')[:-1] joined by ' ', continuation = ' ' + last word.
Task read_lambada(const std::string& path) {
  Task task;
  task.name = "lambada_openai";
  task.source = path;
  task.split = "test";
  task.output = TaskOutput::kLoglikelihood;
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    const std::vector<std::string> words = py_split(json_string(jl.value, "text", at), " ");
    MOE_USAGE_CHECK(words.size() >= 2, "{}: text has no space, so no last word to predict", at);
    std::string ctx = words[0];
    for (size_t w = 1; w + 1 < words.size(); ++w) ctx += " " + words[w];
    TaskDoc doc;
    doc.requests.push_back({ctx, " " + words.back()});
    task.docs.push_back(std::move(doc));
  }
  return task;
}

// Winogrande partial scoring: contexts sentence[:idx] + option_i, one shared continuation
// " " + sentence[idx+1:].strip(), gold {"1": 0, "2": 1}[answer].
Task read_winogrande(const std::string& path) {
  Task task;
  task.name = "winogrande";
  task.source = path;
  task.split = "validation";
  task.output = TaskOutput::kMultipleInput;
  for (const JsonLine& jl : read_jsonl(path)) {
    const std::string at = where(path, jl.line);
    const std::string sentence = json_string(jl.value, "sentence", at);
    const size_t idx = sentence.find('_');
    MOE_USAGE_CHECK(idx != std::string::npos, "{}: sentence has no '_' blank: \"{}\"", at,
                    sentence);
    std::string answer;
    if (jl.value.contains("answer") && jl.value["answer"].is_number_integer()) {
      answer = std::to_string(jl.value["answer"].get<int64_t>());
    } else {
      answer = json_string(jl.value, "answer", at);
    }
    MOE_USAGE_CHECK(answer == "1" || answer == "2", "{}: answer '{}' (expected \"1\" or \"2\")", at,
                    answer);
    const std::string suffix = " " + py_strip(sentence.substr(idx + 1));
    TaskDoc doc;
    for (const char* key : {"option1", "option2"}) {
      doc.requests.push_back({sentence.substr(0, idx) + json_string(jl.value, key, at), suffix});
    }
    doc.gold = answer == "1" ? 0 : 1;
    task.docs.push_back(std::move(doc));
  }
  return task;
}

}  // namespace moe::eval
