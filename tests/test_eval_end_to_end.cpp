// moeeval's library path on a real (tiny, randomly initialised) checkpoint with a real
// sentencepiece tokenizer trained on Tiny Shakespeare from data/: loading, perplexity and bits
// per byte (checked against the model's own per-token NLL), a user zero-shot task, routing
// statistics (overlap measured although the checkpoint was trained without sp), and the results
// JSON in the harness's shape.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "checkpoint/model_checkpoint.h"
#include "eval/eval_report.h"
#include "eval/moe_scoring.h"
#include "eval/paper_suite.h"
#include "eval/task_metrics.h"
#include "eval/perplexity.h"
#include "eval/report_table.h"
#include "eval/task_readers.h"
#include "model/weights_io.h"
#include "support/paths.h"

namespace fs = std::filesystem;

namespace moe::eval {
namespace {

std::string read_text(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string s(max_bytes, '\0');
  in.read(s.data(), static_cast<std::streamsize>(max_bytes));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

// Writes <tmp>/run/checkpoints/step_00000005 (config, random weights, tokenizer); returns it.
std::string make_checkpoint(const std::string& text) {
  data::TrainingSample sample(static_cast<int64_t>(text.size()), static_cast<int64_t>(text.size()));
  sample.add_document(text);
  const data::Tokenizer tok = data::train_tokenizer(sample.sentences(), 320);
  Config cfg;
  cfg.model.vocab_size = tok.vocab_size();
  cfg.model.d_model = 32;
  cfg.model.n_layers = 3;
  cfg.model.n_heads = 2;
  cfg.model.n_kv_heads = 1;
  cfg.model.n_experts = 4;
  cfg.model.top_k = 2;
  cfg.model.expert_ffn_dim = 16;
  cfg.model.max_seq_len = 32;
  cfg.model.init_std = 0.2;  // far from uniform, so the routing statistics are not trivial
  cfg.train.seq_len = 32;
  cfg.loss.losses = {"lb"};  // no sp: moeeval must still measure the overlap
  const std::string dir = test::make_temp_dir("e2e") + "/run/checkpoints/step_00000005";
  fs::create_directories(dir);
  std::ofstream(fs::path(dir) / "config.yaml") << config_to_yaml(cfg);
  tok.save((fs::path(dir) / "tokenizer.model").string());
  auto backend = make_backend("cpu", 1);
  MoeModel model(cfg.model, cfg.loss, *backend, 1, cfg.model.max_seq_len);
  model.init_parameters(11);
  save_weights(model, (fs::path(dir) / "model.safetensors").string());
  return dir;
}

TEST(EvalEndToEnd, TinyCheckpointAllModes) {
  const std::string corpus = test::data_dir() + "/corpora/tinyshakespeare/input.txt";
  ASSERT_TRUE(std::filesystem::exists(corpus)) << corpus << " is missing from the repository";
  const std::string dir = make_checkpoint(read_text(corpus, 60'000));
  const std::string tmp = fs::path(dir).parent_path().parent_path().parent_path().string();
  const std::string heldout = tmp + "/heldout.txt";
  std::ofstream(heldout) << read_text(corpus, 64'000).substr(61'000);
  const std::string task_file = tmp + "/shakes.jsonl";
  std::ofstream(task_file)
      << R"({"context": "First Citizen:\nBefore we proceed any further, hear me", "choices": ["speak.", "xylophone."], "gold": 0})" "\n"
      << R"({"context": "All:\nSpeak,", "choices": ["speak.", "qqq zzz"], "gold": 0})" "\n";

  auto backend = make_backend("cpu", 2);
  LoadedCheckpoint ck = load_model_checkpoint(tmp + "/run", *backend, 4);  // run dir -> newest
  EXPECT_EQ(ck.dir, dir);
  MoeScoring model(*ck.model, 4);
  const data::Tokenizer& tok = *ck.tokenizer;
  const Encoder enc = [&tok](const std::string& s) { return tok.encode(s); };
  const int32_t eos = tok.eos_id();

  // Perplexity: every token once; the total NLL equals the model's own per-token NLL over the
  // same windows; bits per byte follows from it.
  const PerplexityResult p = evaluate_perplexity({heldout}, "text", model, enc, eos);
  EXPECT_EQ(p.documents, 1);
  EXPECT_EQ(p.tokens, static_cast<int64_t>(tok.encode(read_text(heldout, 1 << 20)).size()));
  EXPECT_EQ(p.bytes, 3000);
  EXPECT_NEAR(p.bits_per_byte, p.nll_sum / (std::log(2.0) * 3000), 1e-12);
  EXPECT_GT(p.perplexity, 1.0);
  double nll_direct = 0;
  for (const TokenRequest& w : rolling_windows(tok.encode(read_text(heldout, 1 << 20)), eos, 32)) {
    Batch b;
    b.batch = 1;
    b.seq = static_cast<int64_t>(w.tokens.size()) - 1;
    b.inputs.assign(w.tokens.begin(), w.tokens.end() - 1);
    b.targets.assign(b.seq, -1);
    for (int64_t t = b.seq - w.n_targets; t < b.seq; ++t) b.targets[t] = w.tokens[t + 1];
    ck.model->forward(b, false);
    for (float x : ck.model->token_nll()) nll_direct += x;
  }
  EXPECT_NEAR(p.nll_sum, nll_direct, 1e-4 * nll_direct);

  // A user task through the real tokenizer.
  const Task task = load_task(task_file, "");
  const TaskResult t = evaluate_task(task, model, enc, {});
  EXPECT_EQ(t.n_effective, 2);
  ASSERT_NE(t.find("acc_norm"), nullptr);
  EXPECT_GT(t.stats.tokens_per_second(), 0.0);

  // Routing over the held-out stream: every position counted, overlap measured.
  const RoutingEvalResult r = evaluate_routing({heldout}, "text", model, enc, eos, true);
  EXPECT_EQ(r.summary.n_tokens, p.tokens + 1);  // [eos] + document
  ASSERT_EQ(r.summary.layers.size(), 3u);
  ASSERT_EQ(r.summary.pathways.size(), 2u);
  EXPECT_TRUE(std::isfinite(r.summary.overlap));
  EXPECT_GT(r.summary.overlap, 0.0);
  EXPECT_GT(r.summary.top1_accuracy, 0.0);
  EXPECT_LE(r.summary.top1_accuracy, r.summary.top1_accuracy_best + 1e-12);

  CheckpointReport rep;
  rep.checkpoint = ck.dir;
  rep.step = ck.step;
  rep.ppl = {p};
  rep.tasks = {t};
  rep.routing = {r};
  const nlohmann::json j = report_to_json(rep, {});
  EXPECT_TRUE(j["results"]["shakes"].contains("acc,none"));
  EXPECT_TRUE(j["results"]["shakes"].contains("acc_norm_stderr,none"));
  EXPECT_EQ(j["n-samples"]["shakes"]["effective"], 2);
  EXPECT_EQ(j["routing"][heldout]["pathways"].size(), 2u);
  EXPECT_NEAR(j["perplexity"][heldout]["bits_per_byte"].get<double>(), p.bits_per_byte, 1e-12);
  const std::string table = format_single_report(rep);
  EXPECT_NE(table.find("acc_norm"), std::string::npos);
  EXPECT_NE(table.find("top-1 acc"), std::string::npos);
  const std::string side = format_side_by_side({rep, rep});
  EXPECT_NE(side.find("(+0.0000)"), std::string::npos);  // deltas against the first
  std::ofstream(tmp + "/results.json") << j.dump(2);    // left for tools/plot.py checks
}

// MMLU (two questions of each of the 57 subjects, 5-shot) and TruthfulQA MC2 on the tiny
// checkpoint: the KV cache gives the plain path's scores, the four categories and mmlu are
// aggregated, mc2 equals the probability mass recomputed from the choices' own scores, and the
// paper's table and the JSON carry them.
TEST(EvalEndToEnd, MmluAndTruthfulQaSuite) {
  const std::string corpus = test::data_dir() + "/corpora/tinyshakespeare/input.txt";
  ASSERT_TRUE(std::filesystem::exists(corpus)) << corpus << " is missing from the repository";
  const std::string dir = make_checkpoint(read_text(corpus, 60'000));
  auto backend = make_backend("cpu", 2);
  LoadedCheckpoint ck = load_model_checkpoint(dir, *backend, 4);
  MoeScoring model(*ck.model, 4);
  const data::Tokenizer& tok = *ck.tokenizer;
  const Encoder enc = [&tok](const std::string& s) { return tok.encode(s); };
  const std::string tasks_dir = test::data_dir() + "/zeroshot";
  ZeroShotOptions cached, plain;
  cached.limit = plain.limit = 2;
  cached.start_token = plain.start_token = tok.eos_id();
  plain.kv_cache = false;
  CheckpointReport rep;
  rep.checkpoint = ck.dir;
  for (const Task& t : load_tasks("mmlu", tasks_dir, 5)) {
    const TaskResult a = evaluate_task(t, model, enc, cached);
    const TaskResult b = evaluate_task(t, model, enc, plain);
    EXPECT_EQ(a.find("acc")->value, b.find("acc")->value) << t.name;
    EXPECT_EQ(a.num_fewshot, 5);
    rep.tasks.push_back(a);
  }
  const Task tqa = load_task("truthfulqa_mc2", tasks_dir);
  const TaskResult mc2 = evaluate_task(tqa, model, enc, cached);
  const TaskResult mc2_plain = evaluate_task(tqa, model, enc, plain);
  EXPECT_NEAR(mc2.find("acc")->value, mc2_plain.find("acc")->value, 1e-5);
  // mc2 by hand from the per-choice log-likelihoods of the same two documents.
  double expected = 0;
  for (int d = 0; d < 2; ++d) {
    std::vector<double> lls;
    for (const LoglikRequest& r : tqa.docs[d].requests) {
      Task one;
      one.name = "one";
      one.output = TaskOutput::kLoglikelihood;
      TaskDoc doc;
      doc.requests = {r};
      one.docs = {doc};
      const TaskResult s = evaluate_task(one, model, enc, cached);
      lls.push_back(-std::log(s.find("perplexity")->value));  // exp(-mean ll) over one document
    }
    expected += mc2_score(lls, tqa.docs[d].labels) / 2;
  }
  EXPECT_NEAR(mc2.find("acc")->value, expected, 1e-5);
  EXPECT_GT(mc2.find("acc")->value, 0.0);
  EXPECT_LT(mc2.find("acc")->value, 1.0);
  rep.tasks.push_back(mc2);
  rep.groups = aggregate_groups(rep.tasks);
  ASSERT_EQ(rep.groups.size(), 5u);
  EXPECT_EQ(rep.groups.back().name, "mmlu");
  EXPECT_EQ(rep.groups.back().n, 114);
  const nlohmann::json j = report_to_json(rep, {});
  EXPECT_EQ(j["results"]["mmlu"]["sample_len"], 114);
  EXPECT_EQ(j["results"]["mmlu_humanities"]["alias"], " - humanities");
  EXPECT_EQ(j["group_subtasks"]["mmlu_humanities"].size(), 13u);
  EXPECT_EQ(j["n-shot"]["mmlu_anatomy"], 5);
  EXPECT_EQ(j["versions"]["truthfulqa_mc2"], 3.0);
  // The averages count mmlu once (as one task), not its 57 subjects.
  EXPECT_NEAR(*zero_shot_average(rep, false),
              (rep.groups.back().find("acc")->value + mc2.find("acc")->value) / 2, 1e-12);
  const std::string table = format_paper_table({rep});
  EXPECT_NE(table.find("TruthfulQA-MC2"), std::string::npos);
  EXPECT_NE(table.find("missing"), std::string::npos);  // ARC, PIQA, HellaSwag were not run
  EXPECT_NE(table.find("(2 of 6)"), std::string::npos);
  const std::string single = format_single_report(rep);
  EXPECT_NE(single.find(" - social sciences"), std::string::npos);
  EXPECT_NE(single.find("questions/s"), std::string::npos);
}

}  // namespace
}  // namespace moe::eval
