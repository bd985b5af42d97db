// MMLU and TruthfulQA: the CSV reader on the awkward cases of MMLU's files (quoted line breaks,
// LF / CRLF / mixed row ends, no final newline, "" escapes, whitespace kept) and on malformed
// input; split counts of the real files; prompts against a fixture written by hand from the
// harness's templates (a subject with underscores, a question with a trailing newline, 5-shot);
// MC2 on items whose answer is known by hand; the MMLU category aggregation on constructed
// per-subject results.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/csv_reader.h"
#include "eval/task_groups.h"
#include "eval/task_metrics.h"
#include "eval/task_readers.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

std::string zeroshot_dir() {
  const fs::path dir = fs::path(test::data_dir()) / "zeroshot";
  if (!fs::is_directory(dir)) {
    ADD_FAILURE() << dir << " not found: the readers are tested on the real task files there";
    return "";
  }
  return dir.string();
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const fs::path p = fs::path(dir) / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

template <typename Fn>
void expect_usage_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a usage error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    for (const auto& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << p << "\"";
    }
  }
}

using Rows = std::vector<std::vector<std::string>>;
Rows fields_of(const std::vector<CsvRow>& rows) {
  Rows out;
  for (const auto& r : rows) out.push_back(r.fields);
  return out;
}

// ---- CSV ----------------------------------------------------------------------------------------

TEST(CsvReader, QuotedLineBreaksEscapesAndWhitespace) {
  // Row 1 (LF end): a quoted LF and a quoted CRLF kept byte for byte, "" -> ", spaces kept around
  // unquoted and inside quoted fields. Row 2 (CRLF end) starts on line 4.
  const std::string data =
      " lead,\"a\nb\",\"c\r\nd\",\"say \"\"hi\"\"\", trail ,\"\"\n"
      "x,\" y \",,z\r\n";
  const auto rows = parse_csv(data, "t.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].line, 1);
  EXPECT_EQ(rows[0].fields,
            (std::vector<std::string>{" lead", "a\nb", "c\r\nd", "say \"hi\"", " trail ", ""}));
  EXPECT_EQ(rows[1].line, 4);
  EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"x", " y ", "", "z"}));
}

TEST(CsvReader, MixedLineEndsBlankLinesAndNoFinalNewline) {
  const Rows want = {{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}};
  for (const std::string& data : {std::string("a,1\nb,2\nc,3\nd,4\n"),
                                  std::string("a,1\r\nb,2\r\nc,3\r\nd,4\r\n"),
                                  std::string("a,1\r\nb,2\nc,3\r\nd,4"),  // mixed, no final newline
                                  std::string("a,1\rb,2\r\n\r\nc,3\n\nd,4")}) {
    EXPECT_EQ(fields_of(parse_csv(data, "t.csv")), want) << data;
  }
  const auto rows = parse_csv("a,1\r\n\r\nb,2\n\"multi\nline\",3\nd,4", "t.csv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].line, 3);
  EXPECT_EQ(rows[2].line, 4);
  EXPECT_EQ(rows[3].line, 6);
  // A quoted last field at the end of the file without a newline.
  EXPECT_EQ(fields_of(parse_csv("a,\"b\"", "t.csv")), (Rows{{"a", "b"}}));
}

TEST(CsvReader, MalformedInputNamesFileAndLine) {
  expect_usage_error([] { parse_csv("a,1\nb,\"open\n", "bad.csv"); }, {"bad.csv:2", "malformed"});
  expect_usage_error([] { parse_csv("a,1\nok,2\nb\"c,3\n", "bad.csv"); }, {"bad.csv:3"});
  expect_usage_error([] { parse_csv("a,\"b\"x,1\n", "bad.csv"); }, {"bad.csv:1"});
}

// ---- MMLU ---------------------------------------------------------------------------------------

TEST(MmluReal, SplitCountsAndSubjects) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  ASSERT_EQ(mmlu_subjects().size(), 57u);
  std::map<std::string, int64_t> per_split;
  std::map<std::string, int64_t> per_category;
  for (const auto& s : mmlu_subjects()) {
    for (const std::string split : {"dev", "val", "test"}) {
      const std::string path = dir + "/mmlu/" + split + "/" + s.name + "_" + split + ".csv";
      if (path.find("college_medicine_val.csv") != std::string::npos) {
        // Its row 6 has a '"' inside an unquoted field, which RFC 4180 forbids: a clear error
        // (Python's lenient csv keeps the quote as text; the harness never reads val).
        expect_usage_error([&] { read_csv(path); }, {"college_medicine_val.csv:6", "malformed"});
        per_split[split] += 22;  // its rows, as Python's csv module counts them
        continue;
      }
      const auto rows = read_csv(path);
      for (const auto& r : rows) ASSERT_EQ(r.fields.size(), 6u) << path << ":" << r.line;
      per_split[split] += static_cast<int64_t>(rows.size());
      if (split == "dev") {
        EXPECT_EQ(rows.size(), 5u) << path;
      }
      if (split == "test") per_category[s.category] += static_cast<int64_t>(rows.size());
    }
  }
  EXPECT_EQ(per_split["dev"], 285);
  EXPECT_EQ(per_split["val"], 1531);
  EXPECT_EQ(per_split["test"], 14042);
  // The harness's category sizes (mmlu_stem 3153, other 3107, social_sciences 3077,
  // humanities 4705 test questions).
  EXPECT_EQ(per_category["stem"], 3153);
  EXPECT_EQ(per_category["other"], 3107);
  EXPECT_EQ(per_category["social_sciences"], 3077);
  EXPECT_EQ(per_category["humanities"], 4705);
  const std::vector<Task> all = load_tasks("mmlu", dir);
  ASSERT_EQ(all.size(), 57u);
  size_t docs = 0;
  for (const Task& t : all) docs += t.docs.size();
  EXPECT_EQ(docs, 14042u);
  EXPECT_EQ(load_tasks("mmlu_humanities", dir).size(), 13u);
  const Task aa = load_task("mmlu_abstract_algebra", dir);
  EXPECT_EQ(aa.docs.size(), 100u);
}

// Fixture: the harness's template applied by hand to the CSV rows.
TEST(MmluReal, PromptsMatchTheHarnessTemplate) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  // abstract_algebra test row 1 (the example in data/README.md), gold B.
  const Task aa = load_task("mmlu_abstract_algebra", dir);
  const TaskDoc& d = aa.docs[0];
  const std::string ctx =
      "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
      "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
      "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:";
  ASSERT_EQ(d.requests.size(), 4u);
  EXPECT_EQ(d.requests[0].context, ctx);
  EXPECT_EQ(d.requests[0].continuation, " A");
  EXPECT_EQ(d.requests[3].continuation, " D");
  EXPECT_EQ(d.gold, 1);
  EXPECT_EQ(aa.version, 1.0);
  // nutrition test row 1: the question ends in a newline inside its quotes (and the row in
  // CRLF); question.strip() removes it, gold C.
  const Task nu = load_task("mmlu_nutrition", dir);
  EXPECT_EQ(nu.docs[0].requests[2].context,
            "The following are multiple choice questions (with answers) about nutrition.\n\n"
            "Which foods tend to be consumed in lower quantities in Wales and Scotland (as of "
            "2020)?\nA. Meat\nB. Confectionary\nC. Fruits and vegetables\nD. Potatoes\nAnswer:");
  EXPECT_EQ(nu.docs[0].gold, 2);
  // world_religions 5-shot: dev rows with CRLF ends, leading spaces (stripped: they are the
  // question), "" escapes, and no final newline; each shot is block + " " + letter + "\n\n".
  const Task wr = load_task("mmlu_world_religions", dir, 5);
  EXPECT_EQ(wr.num_fewshot, 5);
  EXPECT_EQ(
      wr.docs[0].requests[0].context,
      "The following are multiple choice questions (with answers) about world religions.\n\n"
      "What is the sign of the covenant for Jewish males?\nA. The rainbow\nB. Circumcision\n"
      "C. A son\nD. Bar mitzvah\nAnswer: B\n\n"
      "What is the Second Gem in Buddhism?\nA. The Dharma\nB. The Sangha\nC. The Buddha\n"
      "D. The Bodhisattva\nAnswer: A\n\n"
      "In which dynasty was the \"Mandate of Heaven\" developed to legitimatize the new rulers?\n"
      "A. Shang\nB. Zhou\nC. Han\nD. Xia\nAnswer: B\n\n"
      "Which Japanese government promoted a kind of national cult based on the emperor and his "
      "associations with kami?\nA. Honen\nB. Tanaka\nC. Tokugawa\nD. Meiji\nAnswer: D\n\n"
      "How can the Upanishads be characterized?\nA. Ritual texts\nB. Philosophical texts\n"
      "C. Hymns\nD. Origin stories\nAnswer: B\n\n"
      "What can murtis be translated as?\nA. Offerings\nB. Prayers\nC. Apparitions\nD. Idols\n"
      "Answer:");
  EXPECT_EQ(wr.docs[0].gold, 3);
  EXPECT_EQ(load_task("mmlu_world_religions", dir, 2).docs[0].requests[0].context.find("Upanishads"),
            std::string::npos);
}

TEST(MmluBadInput, WrongColumnsBadLetterAndFewshot) {
  const std::string dir = test::make_temp_dir("mmlu_bad");
  write_file(dir, "mmlu/test/anatomy_test.csv", "q1,a,b,c,d,A\r\n\"q2\nsecond line\",a,b,c,d\n");
  expect_usage_error([&] { load_task("mmlu_anatomy", dir); },
                     {"anatomy_test.csv:2", "5 columns, expected 6"});
  write_file(dir, "mmlu/test/anatomy_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,d,E\n");
  expect_usage_error([&] { load_task("mmlu_anatomy", dir); },
                     {"anatomy_test.csv:2", "answer 'E', expected one of A, B, C, D"});
  write_file(dir, "mmlu/test/anatomy_test.csv", "q1,a,b,c,d,A\n");
  write_file(dir, "mmlu/dev/anatomy_dev.csv", "s1,a,b,c,d,B\n");
  expect_usage_error([&] { load_task("mmlu_anatomy", dir, 2); }, {"anatomy_dev.csv", "only 1"});
  EXPECT_EQ(load_task("mmlu_anatomy", dir, 1).docs[0].requests[0].context,
            "The following are multiple choice questions (with answers) about anatomy.\n\n"
            "s1\nA. a\nB. b\nC. c\nD. d\nAnswer: B\n\nq1\nA. a\nB. b\nC. c\nD. d\nAnswer:");
  expect_usage_error([&] { load_task("piqa", dir, 5); }, {"--num-fewshot 5", "not supported"});
  expect_usage_error([&] { load_task("mmlu_astronomy", dir); },
                     {"mmlu/test/astronomy_test.csv", "not found"});
}

// ---- TruthfulQA ---------------------------------------------------------------------------------

TEST(TruthfulQaReal, CountsOrderAndPrompt) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  const Task mc1 = load_task("truthfulqa_mc1", dir);
  const Task mc2 = load_task("truthfulqa_mc2", dir);
  ASSERT_EQ(mc1.docs.size(), 817u);
  ASSERT_EQ(mc2.docs.size(), 817u);
  size_t n1 = 0, n2 = 0, n_true = 0;
  for (const auto& d : mc1.docs) n1 += d.requests.size();
  for (const auto& d : mc2.docs) {
    n2 += d.requests.size();
    for (int l : d.labels) n_true += static_cast<size_t>(l);
  }
  EXPECT_EQ(n1, 4114u);
  EXPECT_EQ(n2, 5882u);
  EXPECT_EQ(n_true, 2585u);
  EXPECT_EQ(mc1.version, 2.0);
  EXPECT_EQ(mc2.version, 3.0);
  EXPECT_EQ(mc2.metric, TaskMetric::kMc2);
  // Questions #25 and #208 (0-based) list a true answer after a false one, and no other does:
  // the labels keep file order.
  std::vector<size_t> true_after_false;
  for (size_t q = 0; q < mc2.docs.size(); ++q) {
    const auto& l = mc2.docs[q].labels;
    for (size_t i = 1; i < l.size(); ++i) {
      if (l[i] == 1 && l[i - 1] == 0) {
        true_after_false.push_back(q);
        break;
      }
    }
  }
  EXPECT_EQ(true_after_false, (std::vector<size_t>{25, 208}));
  EXPECT_EQ(mc1.docs[0].requests[0].context.substr(0, 57),
            "Q: What is human life expectancy in the United States?\nA:");
  const std::string& ctx = mc1.docs[0].requests[0].context;
  const std::string tail =
      "Barcelona, Spain.\n\nQ: What is the smallest country in the world that is at least one "
      "square mile in area?\nA:";
  ASSERT_GT(ctx.size(), tail.size());
  EXPECT_EQ(ctx.substr(ctx.size() - tail.size()), tail);
  EXPECT_EQ(mc1.docs[0].requests[0].continuation,
            " Nauru is the smallest country in the world that is at least one square mile in area.");
  EXPECT_EQ(mc1.docs[0].gold, 0);
}

TEST(TruthfulQaBadInput, LabelsAndStructure) {
  const std::string dir = test::make_temp_dir("tqa_bad");
  write_file(dir, "truthfulqa/mc_task.json",
             R"([{"question": "q", "mc1_targets": {"no": 0, "yes": 1}, "mc2_targets": {"a": 1, "b": 2}}])");
  expect_usage_error([&] { load_task("truthfulqa_mc1", dir); }, {"question 1", "listed first"});
  expect_usage_error([&] { load_task("truthfulqa_mc2", dir); }, {"question 1", "expected 0 or 1"});
  write_file(dir, "truthfulqa/mc_task.json", "[{\"question\": ");
  expect_usage_error([&] { load_task("truthfulqa_mc2", dir); }, {"mc_task.json", "not valid JSON"});
}

TEST(TruthfulQaMetric, Mc2ByHand) {
  // p = (0.5, 0.25, 0.25); true = {0, 2} -> 0.75.
  EXPECT_NEAR(mc2_score({std::log(0.5), std::log(0.25), std::log(0.25)}, {1, 0, 1}), 0.75, 1e-12);
  // Only the relative likelihoods matter; ll = -1000 would underflow exp() to 0/0.
  EXPECT_NEAR(mc2_score({-1000.0, -1000.0 + std::log(3.0)}, {0, 1}), 0.75, 1e-12);
  // A false answer before a true one (#25 / #208): the mask, not the first 0, decides.
  EXPECT_NEAR(mc2_score({std::log(0.2), std::log(0.3), std::log(0.5)}, {1, 0, 1}), 0.7, 1e-12);
  // Through the task aggregation: two documents, mean of the per-document masses.
  Task t;
  t.name = "truthfulqa_mc2";
  t.metric = TaskMetric::kMc2;
  for (int i = 0; i < 2; ++i) {
    TaskDoc d;
    d.requests = {{"c", " a"}, {"c", " b"}};
    d.choice_chars = {1, 1};
    d.labels = {1, 0};
    t.docs.push_back(d);
  }
  const std::vector<ScoredRequest> scores = {{std::log(0.9), true, 1}, {std::log(0.1), true, 1},
                                             {std::log(0.3), true, 1}, {std::log(0.7), true, 1}};
  const TaskResult r = aggregate_task(t, 2, scores, 0);
  ASSERT_NE(r.find("acc"), nullptr);
  EXPECT_NEAR(r.find("acc")->value, 0.6, 1e-12);
  EXPECT_EQ(r.find("acc_norm"), nullptr);
}

// ---- Groups -------------------------------------------------------------------------------------

TEST(MmluGroups, CategoriesAndOverallWeightedBySize) {
  // Per-subject results built from 0/1 outcomes: subject i has n_i = 3 + i questions, of which
  // the first (i % 4) + 1 are right.
  std::vector<TaskResult> tasks;
  std::map<std::string, std::vector<double>> outcomes_by_category;
  std::vector<double> all;
  int i = 0;
  for (const auto& s : mmlu_subjects()) {
    std::vector<double> xs(static_cast<size_t>(3 + i), 0.0);
    for (int k = 0; k <= i % 4; ++k) xs[static_cast<size_t>(k)] = 1.0;
    TaskResult r;
    r.name = std::string("mmlu_") + s.name;
    r.dataset_name = s.name;
    r.n_effective = static_cast<int64_t>(xs.size());
    r.metrics.push_back({"acc", {mean_of(xs), mean_stderr(xs)}});
    tasks.push_back(r);
    for (double x : xs) outcomes_by_category[s.category].push_back(x);
    all.insert(all.end(), xs.begin(), xs.end());
    ++i;
  }
  // One task outside any group stays at the top level.
  TaskResult piqa;
  piqa.name = "piqa";
  piqa.n_effective = 2;
  piqa.metrics.push_back({"acc", {0.5, std::nullopt}});
  tasks.insert(tasks.begin(), piqa);
  const std::vector<GroupResult> groups = aggregate_groups(tasks);
  ASSERT_EQ(groups.size(), 5u);
  // Pooled stderr, computed here from the formula in lm_eval/api/metrics.py.
  auto pooled = [&](const std::vector<std::pair<int64_t, double>>& n_se) {
    double num = 0, n = 0;
    for (const auto& [ni, se] : n_se) {
      num += (ni - 1) * se * se * ni;
      n += ni;
    }
    return std::sqrt(num / (n - n_se.size()) / n);
  };
  std::map<std::string, std::vector<std::pair<int64_t, double>>> members;
  for (const TaskResult& t : tasks) {
    for (const auto& s : mmlu_subjects()) {
      if (t.name == std::string("mmlu_") + s.name) {
        members[s.category].push_back({t.n_effective, *t.find("acc")->stderr_value});
      }
    }
  }
  std::vector<std::pair<int64_t, double>> category_members;
  for (const GroupResult& g : groups) {
    if (g.name == "mmlu") continue;
    const std::string cat = g.name.substr(5);
    const std::vector<double>& xs = outcomes_by_category[cat];
    EXPECT_EQ(g.n, static_cast<int64_t>(xs.size())) << g.name;
    EXPECT_NEAR(g.find("acc")->value, mean_of(xs), 1e-12) << g.name;  // mean over questions
    EXPECT_NEAR(*g.find("acc")->stderr_value, pooled(members[cat]), 1e-12) << g.name;
    category_members.push_back({g.n, *g.find("acc")->stderr_value});
  }
  const GroupResult& mmlu = groups.back();
  EXPECT_EQ(mmlu.name, "mmlu");
  EXPECT_EQ(mmlu.n, static_cast<int64_t>(all.size()));
  EXPECT_NEAR(mmlu.find("acc")->value, mean_of(all), 1e-12);
  EXPECT_NEAR(*mmlu.find("acc")->stderr_value, pooled(category_members), 1e-12);
  // Harness order: mmlu, then each category (by name) followed by its subjects (by name); then
  // the task in no group. Aliases " - humanities", "  - formal_logic".
  const std::vector<ResultRow> rows = result_rows(tasks, groups);
  ASSERT_EQ(rows.size(), 1u + 4u + 57u + 1u);
  EXPECT_TRUE(rows[0].is_group);
  EXPECT_EQ(groups[rows[0].index].name, "mmlu");
  EXPECT_EQ(groups[rows[1].index].name, "mmlu_humanities");
  EXPECT_EQ(row_alias(groups[rows[1].index].alias, rows[1].depth), " - humanities");
  EXPECT_EQ(tasks[rows[2].index].name, "mmlu_formal_logic");
  EXPECT_EQ(row_alias(task_alias(tasks[rows[2].index]), rows[2].depth), "  - formal_logic");
  EXPECT_EQ(tasks[rows.back().index].name, "piqa");
  EXPECT_EQ(rows.back().depth, 0);
  // Without every subject of a category there is no category group, and no mmlu.
  tasks.pop_back();
  const std::vector<GroupResult> partial = aggregate_groups(tasks);
  EXPECT_EQ(partial.size(), 3u);
  for (const GroupResult& g : partial) EXPECT_NE(g.name, "mmlu");
}

}  // namespace
}  // namespace moe::eval
