// Zero-shot task readers: item counts and rendered prompts on the real files in data/zeroshot
// (the counts documented in data/README.md), readers for the tasks whose files are not
// shipped (on small files written here in the formats of the original releases), and bad input.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/task_files.h"
#include "eval/task_readers.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

// The zero-shot folder; fails (not skips) the test when it is absent.
std::string zeroshot_dir() {
  const fs::path dir = fs::path(test::data_dir()) / "zeroshot";
  if (!fs::is_directory(dir)) {
    ADD_FAILURE() << dir << " not found: the task readers are tested on the real task files there";
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

// Runs fn, expects a usage error whose message contains every one of `parts`.
template <typename Fn>
void expect_usage_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a usage error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message \"" << e.what() << "\" lacks \"" << p << "\"";
  }
}

TEST(TaskReadersReal, HellaswagConvertedFile) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  const Task t = load_task("hellaswag", dir);
  ASSERT_EQ(t.docs.size(), 10042u);
  EXPECT_TRUE(t.reports_acc_norm);
  // First validation item: ctx_a "A man is sitting on a roof.", ctx_b "he" -> capitalized.
  const TaskDoc& d = t.docs[0];
  EXPECT_EQ(d.requests[0].context, "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(d.requests[0].continuation, " is using wrap to wrap a pair of skis.");
  EXPECT_EQ(d.gold, 3);
  ASSERT_EQ(d.choice_chars.size(), 4u);
  EXPECT_EQ(d.choice_chars[0], 37.0);  // "is using wrap to wrap a pair of skis."
}

TEST(TaskReadersReal, Piqa) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  const Task t = load_task("piqa", dir);
  ASSERT_EQ(t.docs.size(), 1838u);
  EXPECT_EQ(t.docs[0].requests[0].context,
            "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
  EXPECT_EQ(t.docs[0].requests.size(), 2u);
  EXPECT_EQ(t.docs[0].gold, 0);
  EXPECT_EQ(t.docs[1].gold, 1);
  // Item 2's sol1 ends with a space: the choice keeps it (and its length counts it).
  EXPECT_EQ(t.docs[1].requests[0].continuation, " replace drawer with bobby pin ");
  EXPECT_EQ(t.docs[1].choice_chars[0], 30.0);
}

TEST(TaskReadersReal, ArcEasyDev) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  const Task t = load_task("arc_easy", dir);
  ASSERT_EQ(t.docs.size(), 570u);
  EXPECT_EQ(t.split, "dev");
  EXPECT_FALSE(t.note.empty());
  EXPECT_EQ(t.docs[0].requests[0].context,
            "Question: Which technology was developed most recently?\nAnswer:");
  EXPECT_EQ(t.docs[0].requests[0].continuation, " cellular telephone");
  EXPECT_EQ(t.docs[0].gold, 0);
  size_t three = 0, five = 0;
  for (const auto& d : t.docs) {
    three += d.requests.size() == 3;
    five += d.requests.size() == 5;
  }
  EXPECT_GT(three + five, 0u);  // the README: a few items have 3 or 5 choices
}

TEST(TaskReaders, SplitChoosesAmongTestAndDev) {
  // An ARC-Challenge folder with both Test and Dev: the default takes Test; --split dev (or
  // validation) takes Dev; a split a task does not have is a usage error naming its splits.
  const std::string dir = test::make_temp_dir("split");
  const std::string item = R"({"id":"x","question":{"stem":"Q?","choices":[{"text":"a","label":"A"},)"
                           R"({"text":"b","label":"B"}]},"answerKey":"B"})";
  write_file(dir, "arc_challenge/ARC-Challenge-Test.jsonl", item + "\n" + item + "\n");
  write_file(dir, "arc_challenge/ARC-Challenge-Dev.jsonl", item + "\n");
  const Task test_split = load_task("arc_challenge", dir);
  EXPECT_EQ(test_split.split, "test");
  EXPECT_EQ(test_split.docs.size(), 2u);
  for (const char* dev : {"dev", "validation", "val"}) {
    const Task t = load_task("arc_challenge", dir, 0, dev);
    EXPECT_EQ(t.split, "dev");
    EXPECT_EQ(t.docs.size(), 1u);
    EXPECT_NE(t.source.find("Dev"), std::string::npos) << t.source;
  }
  EXPECT_EQ(load_task("arc_challenge", dir, 0, "test").docs.size(), 2u);
  expect_usage_error([&] { load_task("arc_challenge", dir, 0, "train"); },
                     {"arc_challenge", "--split train", "test, validation"});
  // the shipped folders: arc_easy has Dev only, openbookqa both test and dev
  const std::string zs = zeroshot_dir();
  if (zs.empty()) return;
  expect_usage_error([&] { load_task("arc_easy", zs, 0, "test"); }, {"ARC-Easy-Test.jsonl"});
  EXPECT_EQ(load_task("arc_easy", zs, 0, "dev").docs.size(), 570u);
  const Task obqa_dev = load_task("openbookqa", zs, 0, "dev");
  EXPECT_EQ(obqa_dev.split, "validation");
  EXPECT_EQ(obqa_dev.docs.size(), 500u);
  EXPECT_NE(obqa_dev.source.find("dev.jsonl"), std::string::npos);
  EXPECT_EQ(load_task("openbookqa", zs).split, "test");
  expect_usage_error([&] { load_task("piqa", zs, 0, "test"); }, {"piqa", "validation"});
}

TEST(TaskReadersReal, OpenbookqaBoolqLambadaCopa) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  const Task obqa = load_task("openbookqa", dir);
  ASSERT_EQ(obqa.docs.size(), 500u);
  EXPECT_EQ(obqa.docs[0].gold, 1);  // answerKey B
  EXPECT_EQ(obqa.docs[0].requests[1].continuation, " quit eating lunch out");
  EXPECT_EQ(obqa.docs[1].requests[0].context, "There is most likely going to be fog around:");

  const Task boolq = load_task("boolq", dir);
  ASSERT_EQ(boolq.docs.size(), 3270u);
  EXPECT_EQ(boolq.version, 2.0);
  int64_t yes = 0;
  for (const auto& d : boolq.docs) yes += d.gold;
  EXPECT_EQ(yes, 2033);  // README: 2,033 true / 1,237 false
  const std::string& ctx = boolq.docs[0].requests[0].context;
  EXPECT_NE(ctx.find("\nQuestion: does ethanol take more energy make that produces?\nAnswer:"),
            std::string::npos);
  EXPECT_EQ(boolq.docs[0].requests[0].continuation, " no");
  EXPECT_EQ(boolq.docs[0].requests[1].continuation, " yes");
  EXPECT_EQ(boolq.docs[0].gold, 0);

  const Task lambada = load_task("lambada_openai", dir);
  ASSERT_EQ(lambada.docs.size(), 5153u);
  EXPECT_EQ(lambada.output, TaskOutput::kLoglikelihood);
  EXPECT_EQ(lambada.docs[0].requests[0].continuation, " signs");
  const std::string& lctx = lambada.docs[0].requests[0].context;
  EXPECT_EQ(lctx.substr(lctx.size() - 18), "I don't care about");

  const Task copa = load_task("copa", dir);
  ASSERT_EQ(copa.docs.size(), 100u);
  EXPECT_EQ(copa.docs[0].requests[0].context, "The man turned on the faucet therefore");
  EXPECT_EQ(copa.docs[0].requests[0].continuation, "  the toilet filled with water.");
  EXPECT_EQ(copa.docs[0].gold, 1);
  int64_t because = 0;
  for (const auto& d : copa.docs) {
    const std::string& c = d.requests[0].context;
    because += c.size() > 8 && c.substr(c.size() - 8) == " because";
  }
  EXPECT_EQ(because, 52);  // README: 52 cause, 48 effect
}

TEST(TaskReadersReal, TasksWithoutFilesAreClearErrors) {
  const std::string dir = zeroshot_dir();
  if (dir.empty()) return;
  expect_usage_error([&] { load_task("arc_challenge", dir); },
                     {"arc_challenge", "ARC-Challenge-Test.jsonl", "not found"});
  expect_usage_error([&] { load_task("winogrande", dir); }, {"winogrande/dev.jsonl"});
  expect_usage_error([&] { load_task("sciq", dir); }, {"sciq/test.json"});
  expect_usage_error([&] { load_task("no_such_task", dir); }, {"no_such_task.jsonl", "hellaswag"});
}

TEST(TaskReaders, HellaswagPreprocess) {
  // HellaSwag's preprocess example (docs/model.md §4.2), checked with CPython.
  EXPECT_EQ(hellaswag_preprocess("clean [title] Step one.  [step] Wash   it."),
            "clean. Step one.  Wash  it.");
  EXPECT_EQ(hellaswag_preprocess("  keep [no close"), "keep [no close");
  EXPECT_EQ(hellaswag_preprocess("a [x\ny] b"), "a [x\ny] b");  // no match across a newline
}

TEST(TaskReaders, HellaswagOriginalJsonl) {
  const std::string dir = test::make_temp_dir("hs");
  const std::string f = write_file(dir, "hellaswag/hellaswag_val.jsonl",
      R"({"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", )"
      R"("ctx_b": "then, John", "endings": ["a [step] b", "c", "d", "e"], "label": "2"})" "\n");
  const Task t = load_task("hellaswag", dir);
  ASSERT_EQ(t.docs.size(), 1u);
  EXPECT_EQ(t.source, f);
  EXPECT_EQ(t.docs[0].requests[0].context, "Roof shingle removal: A man is sitting on a roof. Then, john");
  EXPECT_EQ(t.docs[0].requests[0].continuation, " a b");
  EXPECT_EQ(t.docs[0].gold, 2);
}

TEST(TaskReaders, WinograndePartialScoringRequests) {
  const std::string dir = test::make_temp_dir("wg");
  write_file(dir, "winogrande/dev.jsonl",
             R"({"qID": "x", "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.", "option1": "Sarah", "option2": "Maria", "answer": "1"})" "\n"
             R"({"qID": "y", "sentence": "The trophy didn't fit because the _.", "option1": "case", "option2": "trophy", "answer": "2"})" "\n");
  const Task t = load_task("winogrande", dir);
  ASSERT_EQ(t.docs.size(), 2u);
  EXPECT_EQ(t.output, TaskOutput::kMultipleInput);
  const TaskDoc& d = t.docs[0];
  ASSERT_EQ(d.requests.size(), 2u);
  EXPECT_EQ(d.requests[0].context, "Sarah was a much better surgeon than Maria so Sarah");
  EXPECT_EQ(d.requests[1].context, "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(d.requests[0].continuation, " always got the harder cases.");
  EXPECT_EQ(d.requests[1].continuation, d.requests[0].continuation);
  EXPECT_EQ(d.gold, 0);
  // A blank followed by punctuation: the continuation is " ." as in the harness.
  EXPECT_EQ(t.docs[1].requests[1].context, "The trophy didn't fit because the trophy");
  EXPECT_EQ(t.docs[1].requests[1].continuation, " .");
  EXPECT_EQ(t.docs[1].gold, 1);
}

TEST(TaskReaders, SciqArcChallengeAndSuperglueCopa) {
  const std::string dir = test::make_temp_dir("sciq");
  write_file(dir, "sciq/test.json",
             R"([{"question": "What gas do plants absorb?", "distractor3": "helium", "distractor1": "oxygen", "distractor2": "argon", "correct_answer": "carbon dioxide", "support": "  Plants use CO2."},)"
             R"( {"question": "Q2?", "distractor3": "a", "distractor1": "b", "distractor2": "c", "correct_answer": "d", "support": ""}])");
  const Task sciq = load_task("sciq", dir);
  ASSERT_EQ(sciq.docs.size(), 2u);
  EXPECT_EQ(sciq.docs[0].requests[0].context,
            "Plants use CO2.\nQuestion: What gas do plants absorb?\nAnswer:");
  EXPECT_EQ(sciq.docs[0].requests[3].continuation, " carbon dioxide");
  EXPECT_EQ(sciq.docs[0].requests[2].continuation, " helium");  // distractor1, 2, 3, correct
  EXPECT_EQ(sciq.docs[0].gold, 3);
  EXPECT_EQ(sciq.docs[1].requests[0].context, "\nQuestion: Q2?\nAnswer:");

  write_file(dir, "arc_challenge/ARC-Challenge-Test.jsonl",
             R"({"id":"a","question":{"stem":"Pick?","choices":[{"text":"x","label":"1"},{"text":"y","label":"2"},{"text":"z","label":"3"}]},"answerKey":"3"})" "\n");
  const Task arc = load_task("arc_challenge", dir);
  EXPECT_EQ(arc.split, "test");
  EXPECT_EQ(arc.docs[0].gold, 2);

  write_file(dir, "copa/val.jsonl",
             R"({"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.", "choice2": "The grass was cut.", "question": "cause", "label": 0})" "\n");
  const Task copa = load_task("copa", dir);
  EXPECT_EQ(copa.docs[0].requests[0].context, "My body cast a shadow over the grass because");
  EXPECT_EQ(copa.docs[0].requests[1].continuation, "  the grass was cut.");
}

TEST(TaskReaders, UserTaskJsonl) {
  const std::string dir = test::make_temp_dir("user");
  const std::string f = write_file(dir, "mytask.jsonl",
      R"({"context": "2 + 2 =", "choices": ["4", "five"], "gold": 0})" "\n\n"
      R"({"context": "Paris is in", "choices": ["France", "Spain"], "gold": 0, "target_delimiter": ""})" "\n");
  for (const Task& t : {load_task("mytask", dir), load_task(f, "")}) {
    EXPECT_EQ(t.name, "mytask");
    ASSERT_EQ(t.docs.size(), 2u);
    EXPECT_EQ(t.docs[0].requests[1].continuation, " five");
    EXPECT_EQ(t.docs[0].choice_chars[1], 4.0);
    EXPECT_EQ(t.docs[1].requests[0].continuation, "France");
  }
}

TEST(TaskReadersBadInput, CorruptJsonNamesFileAndLine) {
  const std::string dir = test::make_temp_dir("bad");
  const std::string f = write_file(dir, "t.jsonl",
      R"({"context": "a", "choices": ["x", "y"], "gold": 0})" "\n"
      R"({"context": "b", "choices": ["x", "y"], "gold": )" "\n");
  expect_usage_error([&] { read_user_task("t", f); }, {f + ":2", "not valid JSON"});
  const std::string g = write_file(dir, "g.jsonl", R"({"context": "a", "choices": "x", "gold": 0})");
  expect_usage_error([&] { read_user_task("g", g); }, {g + ":1", "'choices'"});
  const std::string h = write_file(dir, "h.jsonl", R"({"context": "a", "choices": ["x"], "gold": 0})");
  expect_usage_error([&] { read_user_task("h", h); }, {h + ":1", "at least 2 choices"});
}

TEST(TaskReadersBadInput, WrongLabelCounts) {
  const std::string dir = test::make_temp_dir("labels");
  const std::string items = write_file(dir, "piqa/valid.jsonl",
      R"({"goal": "g1", "sol1": "a", "sol2": "b"})" "\n" R"({"goal": "g2", "sol1": "a", "sol2": "b"})" "\n");
  const std::string labels = write_file(dir, "piqa/valid-labels.lst", "0\n");
  expect_usage_error([&] { load_task("piqa", dir); }, {labels, "1 labels for the 2 items"});
  write_file(dir, "piqa/valid-labels.lst", "0\n2\n");
  expect_usage_error([&] { load_task("piqa", dir); }, {labels + ":2", "expected 0 or 1"});
  const std::string user = write_file(dir, "u.jsonl",
      R"({"context": "a", "choices": ["x", "y", "z"], "gold": 3})" "\n");
  expect_usage_error([&] { read_user_task("u", user); },
                     {user + ":1", "gold label 3 out of range for 3 choices"});
  const std::string hs = write_file(dir, "hs.txt", "Label: ctx\n1\na\nb\nc\nd\nLabel: ctx2\n7\na\nb\nc\nd\n");
  expect_usage_error([&] { read_hellaswag_converted(hs); }, {hs + ":8", "0..3"});
  const std::string hs_short = write_file(dir, "hs2.txt", "Label: ctx\n1\na\nb\nc\n");
  expect_usage_error([&] { read_hellaswag_converted(hs_short); }, {hs_short, "6 per item"});
  const std::string arc = write_file(dir, "arc.jsonl",
      R"({"question":{"stem":"s","choices":[{"text":"x","label":"A"},{"text":"y","label":"B"}]},"answerKey":"C"})");
  expect_usage_error([&] { read_arc("arc_easy", arc, "test"); }, {arc + ":1", "answerKey 'C'"});
}

TEST(TaskReadersBadInput, CorruptBz2AndMissingFile) {
  const std::string dir = test::make_temp_dir("bz2");
  const std::string f = write_file(dir, "hellaswag/hellaswag_val_full.txt.bz2", "BZh9 not really");
  expect_usage_error([&] { load_task("hellaswag", dir); }, {f, "bz2"});
  expect_usage_error([&] { read_jsonl((fs::path(dir) / "absent.jsonl").string()); },
                     {"absent.jsonl", "cannot be opened"});
}

}  // namespace
}  // namespace moe::eval
