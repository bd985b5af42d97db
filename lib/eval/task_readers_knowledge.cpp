// Readers for the knowledge tasks of the paper's suite: MMLU (57 subjects, original CSV layout,
// 0- or k-shot from dev) and TruthfulQA MC1 / MC2 (mc_task.json). Prompts as
// lm-evaluation-harness 0.4.x renders them (lm_eval/tasks/mmlu/default/_default_template_yaml
// and the generated mmlu_<subject>.yaml; lm_eval/tasks/truthfulqa/truthfulqa_mc1.yaml, _mc2.yaml).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/csv_reader.h"
#include "eval/task_files.h"
#include "eval/task_readers.h"
#include "eval/text_utils.h"

namespace moe::eval {
namespace {

struct MmluRow {
  std::vector<std::string> fields;  // as parsed
  std::string question;
  std::string choices[4];
  int64_t answer = 0;  // 0..3 = A..D
};

// Every row of an MMLU CSV: question, A, B, C, D, answer letter; no header.
std::vector<MmluRow> read_mmlu_csv(const std::string& path) {
  std::vector<MmluRow> out;
  for (const CsvRow& row : read_csv(path)) {
    MOE_USAGE_CHECK(row.fields.size() == 6,
                    "{}:{}: {} columns, expected 6 (question, A, B, C, D, answer letter)", path,
                    row.line, row.fields.size());
    const std::string& letter = row.fields[5];
    MOE_USAGE_CHECK(letter.size() == 1 && letter[0] >= 'A' && letter[0] <= 'D',
                    "{}:{}: answer '{}', expected one of A, B, C, D", path, row.line, letter);
    MmluRow r;
    r.fields = row.fields;
    r.question = row.fields[0];
    for (int c = 0; c < 4; ++c) r.choices[c] = row.fields[1 + c];
    r.answer = letter[0] - 'A';
    out.push_back(std::move(r));
  }
  MOE_USAGE_CHECK(!out.empty(), "{}: no rows (empty file)", path);
  return out;
}

std::string question_block(const MmluRow& r) {
  return mmlu_question_block(r.question, r.choices[0], r.choices[1], r.choices[2], r.choices[3]);
}

const char* const kTruthfulQaPreamble =
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.";

}  // namespace

const std::vector<MmluSubject>& mmlu_subjects() {
  // The harness's subject -> category map (lm_eval/tasks/mmlu/_generate_configs.py), in the
  // alphabetical order of the subjects.
  static const std::vector<MmluSubject> subjects = {
      {"abstract_algebra", "stem"},
      {"anatomy", "stem"},
      {"astronomy", "stem"},
      {"business_ethics", "other"},
      {"clinical_knowledge", "other"},
      {"college_biology", "stem"},
      {"college_chemistry", "stem"},
      {"college_computer_science", "stem"},
      {"college_mathematics", "stem"},
      {"college_medicine", "other"},
      {"college_physics", "stem"},
      {"computer_security", "stem"},
      {"conceptual_physics", "stem"},
      {"econometrics", "social_sciences"},
      {"electrical_engineering", "stem"},
      {"elementary_mathematics", "stem"},
      {"formal_logic", "humanities"},
      {"global_facts", "other"},
      {"high_school_biology", "stem"},
      {"high_school_chemistry", "stem"},
      {"high_school_computer_science", "stem"},
      {"high_school_european_history", "humanities"},
      {"high_school_geography", "social_sciences"},
      {"high_school_government_and_politics", "social_sciences"},
      {"high_school_macroeconomics", "social_sciences"},
      {"high_school_mathematics", "stem"},
      {"high_school_microeconomics", "social_sciences"},
      {"high_school_physics", "stem"},
      {"high_school_psychology", "social_sciences"},
      {"high_school_statistics", "stem"},
      {"high_school_us_history", "humanities"},
      {"high_school_world_history", "humanities"},
      {"human_aging", "other"},
      {"human_sexuality", "social_sciences"},
      {"international_law", "humanities"},
      {"jurisprudence", "humanities"},
      {"logical_fallacies", "humanities"},
      {"machine_learning", "stem"},
      {"management", "other"},
      {"marketing", "other"},
      {"medical_genetics", "other"},
      {"miscellaneous", "other"},
      {"moral_disputes", "humanities"},
      {"moral_scenarios", "humanities"},
      {"nutrition", "other"},
      {"philosophy", "humanities"},
      {"prehistory", "humanities"},
      {"professional_accounting", "other"},
      {"professional_law", "humanities"},
      {"professional_medicine", "other"},
      {"professional_psychology", "social_sciences"},
      {"public_relations", "social_sciences"},
      {"security_studies", "social_sciences"},
      {"sociology", "social_sciences"},
      {"us_foreign_policy", "social_sciences"},
      {"virology", "other"},
      {"world_religions", "humanities"},
  };
  return subjects;
}

std::string mmlu_description(const std::string& subject) {
  return "The following are multiple choice questions (with answers) about " +
         py_replace(subject, "_", " ") + ".\n\n";
}

std::string mmlu_question_block(const std::string& question, const std::string& a,
                                 const std::string& b, const std::string& c,
                                 const std::string& d) {
  return py_strip(question) + "\nA. " + a + "\nB. " + b + "\nC. " + c + "\nD. " + d + "\nAnswer:";
}

// context = description + k shots (question block + " " + letter + "\n\n", the first k rows of
// dev: sampler first_n) + question block; continuations " A" .. " D".
Task read_mmlu_subject(const std::string& subject, const std::string& test_path,
                       const std::string& dev_path, int64_t num_fewshot) {
  Task task;
  task.name = "mmlu_" + subject;
  task.dataset_name = subject;
  task.source = test_path;
  task.split = "test";
  task.version = 1.0;
  task.num_fewshot = num_fewshot;
  task.description = mmlu_description(subject);
  std::string prefix = task.description;
  if (num_fewshot > 0) {
    const std::vector<MmluRow> dev = read_mmlu_csv(dev_path);
    MOE_USAGE_CHECK(num_fewshot <= static_cast<int64_t>(dev.size()),
                    "--num-fewshot {}: {} has only {} examples", num_fewshot, dev_path, dev.size());
    for (int64_t i = 0; i < num_fewshot; ++i) {
      task.shot_fields.push_back(dev[i].fields);
      prefix += question_block(dev[i]) + " " + std::string(1, static_cast<char>('A' + dev[i].answer)) +
                "\n\n";
    }
    task.source += " + " + dev_path;
  }
  for (const MmluRow& r : read_mmlu_csv(test_path)) {
    TaskDoc doc;
    const std::string ctx = prefix + question_block(r);
    for (const char* letter : {"A", "B", "C", "D"}) {
      doc.requests.push_back({ctx, std::string(" ") + letter});
      doc.choice_chars.push_back(1.0);
    }
    doc.gold = r.answer;
    doc.fields = r.fields;
    task.docs.push_back(std::move(doc));
  }
  return task;
}

// mc_task.json: [{"question", "mc1_targets": {answer: 0/1, ...}, "mc2_targets": {...}}]. The
// choices are the keys in file order (the truthful_qa dataset script takes keys() and values()),
// so the JSON is read with an order-keeping object type.
Task read_truthfulqa(const std::string& path, int variant) {
  MOE_CHECK(variant == 1 || variant == 2, "TruthfulQA variant {} (expected 1 or 2)", variant);
  const std::string field = variant == 1 ? "mc1_targets" : "mc2_targets";
  nlohmann::ordered_json arr;
  try {
    arr = nlohmann::ordered_json::parse(read_task_file(path));
  } catch (const nlohmann::json::exception& e) {
    MOE_USAGE_FAIL("{}: not valid JSON ({}); expected TruthfulQA's mc_task.json array", path,
                   e.what());
  }
  MOE_USAGE_CHECK(arr.is_array() && !arr.empty(),
                  "{}: expected a non-empty JSON array of questions", path);
  Task task;
  task.name = variant == 1 ? "truthfulqa_mc1" : "truthfulqa_mc2";
  task.source = path;
  task.split = "validation";
  task.version = variant == 1 ? 2.0 : 3.0;
  task.metric = variant == 1 ? TaskMetric::kAccuracy : TaskMetric::kMc2;
  const std::string preamble = kTruthfulQaPreamble;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string at = path + " question " + std::to_string(i + 1);
    const auto& item = arr[i];
    MOE_USAGE_CHECK(item.is_object(), "{}: expected an object, found {}", at, item.type_name());
    auto q = item.find("question");
    MOE_USAGE_CHECK(q != item.end() && q->is_string(), "{}: missing string field 'question'", at);
    auto targets = item.find(field);
    MOE_USAGE_CHECK(targets != item.end() && targets->is_object() && targets->size() >= 2,
                    "{}: field '{}' should be an object of at least 2 {{answer: 0/1}}", at, field);
    TaskDoc doc;
    const std::string ctx = preamble + "\n\nQ: " + q->get<std::string>() + "\nA:";
    int n_true = 0;
    std::vector<int> labels;
    for (auto it = targets->begin(); it != targets->end(); ++it) {
      MOE_USAGE_CHECK(it.value().is_number_integer() &&
                          (it.value().get<int>() == 0 || it.value().get<int>() == 1),
                      "{}: {} label of \"{}\" is {}, expected 0 or 1", at, field, it.key(),
                      it.value().dump());
      doc.requests.push_back({ctx, " " + it.key()});
      doc.choice_chars.push_back(static_cast<double>(utf8_length(it.key())));
      labels.push_back(it.value().get<int>());
      n_true += labels.back();
    }
    MOE_USAGE_CHECK(n_true >= 1, "{}: {} has no true answer", at, field);
    // MC1's target is choice 0 (doc_to_target: 0): the file must list its one true answer first.
    if (variant == 1) {
      MOE_USAGE_CHECK(n_true == 1 && labels[0] == 1,
                      "{}: mc1_targets should hold exactly one true answer, listed first", at);
    } else {
      doc.labels = labels;
    }
    task.docs.push_back(std::move(doc));
  }
  return task;
}

}  // namespace moe::eval
