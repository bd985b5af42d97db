// LoglikScorer with MoeModel's KV cache against the plain path on real task requests: the first
// 20 HellaSwag and 20 PIQA documents from data/zeroshot, tokenized by a sentencepiece
// model trained on Tiny Shakespeare, scored by tiny random MoE models (vanilla and deepseek). A
// 48-token context truncates most HellaSwag items (contexts then differ per choice and take the
// plain path) and splits long PIQA solutions into pieces; a 192-token context keeps them whole,
// so the choices share their context through the cache.
//
// Tolerance on each request's ll: 2e-4 absolute + 1e-5 relative (fp32 logits from two summation
// orders differ by ~1e-6 relative; ll sums up to ~100 log-probabilities); greedy must agree.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "data/tokenizer.h"
#include "eval/loglik_scorer.h"
#include "eval/moe_scoring.h"
#include "eval/task_readers.h"
#include "eval/token_requests.h"
#include "model/model.h"
#include "support/paths.h"

namespace moe::eval {
namespace {

std::string read_text(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string s(max_bytes, '\0');
  in.read(s.data(), static_cast<std::streamsize>(max_bytes));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

const data::Tokenizer& shakespeare_tokenizer() {
  static const data::Tokenizer tok = [] {
    const std::string text =
        read_text(test::data_dir() + "/corpora/tinyshakespeare/input.txt", 60'000);
    data::TrainingSample sample(static_cast<int64_t>(text.size()),
                                static_cast<int64_t>(text.size()));
    sample.add_document(text);
    return data::train_tokenizer(sample.sentences(), 320);
  }();
  return tok;
}

// HellaSwag and PIQA, read once.
const std::vector<Task>& tasks() {
  static const std::vector<Task> t = {load_task("hellaswag", test::data_dir() + "/zeroshot"),
                                      load_task("piqa", test::data_dir() + "/zeroshot")};
  return t;
}

// The token requests of the first `docs` documents of each task, as evaluate_task builds them.
std::vector<TokenRequest> task_requests(int64_t docs, int64_t max_length) {
  const data::Tokenizer& tok = shakespeare_tokenizer();
  const Encoder enc = [&tok](const std::string& s) { return tok.encode(s); };
  std::vector<TokenRequest> out;
  for (const Task& task : tasks()) {
    for (int64_t d = 0; d < docs; ++d) {
      for (const LoglikRequest& r : task.docs.at(d).requests) {
        for (TokenRequest& p : make_token_requests(r, enc, tok.eos_id(), max_length)) {
          out.push_back(std::move(p));
        }
      }
    }
  }
  return out;
}

ModelConfig tiny_config(const std::string& arch, int64_t max_seq_len) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = shakespeare_tokenizer().vocab_size();
  c.d_model = 32;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.n_experts = 4;
  c.top_k = 2;
  c.expert_ffn_dim = 16;
  if (arch == "deepseek") {
    c.dense_layers = 1;
    c.ffn_dim = 48;
    c.n_shared_experts = 1;
    c.norm_topk_prob = true;
  }
  c.max_seq_len = max_seq_len;
  c.init_std = 0.2;
  return c;
}

void expect_same_scores(const std::string& arch, int64_t max_seq_len) {
  SCOPED_TRACE(arch + ", context " + std::to_string(max_seq_len));
  const std::vector<TokenRequest> reqs = task_requests(20, max_seq_len);
  ASSERT_GT(reqs.size(), 120u);  // 20 x 4 + 20 x 2 at least
  const ModelConfig cfg = tiny_config(arch, max_seq_len);
  LossConfig loss;
  loss.losses = {"lb"};
  auto be = make_backend("cpu", 2);
  MoeModel model(cfg, loss, *be, 4, max_seq_len);
  model.init_parameters(17);
  MoeScoring scoring(model, 4);
  LoglikScorer cached(scoring), plain(scoring, int64_t{1} << 28, /*kv_cache=*/false);
  const int32_t pad = shakespeare_tokenizer().eos_id();
  const std::vector<ScoredRequest> a = cached.score(reqs, pad), b = plain.score(reqs, pad);
  ASSERT_EQ(a.size(), reqs.size());
  ASSERT_EQ(b.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_NEAR(a[i].ll, b[i].ll, 2e-4 + 1e-5 * std::abs(b[i].ll)) << "request " << i;
    EXPECT_EQ(a[i].greedy, b[i].greedy) << "request " << i;
    EXPECT_EQ(a[i].n_targets, b[i].n_targets);
  }
  // The cache was used and saved work; both paths scored the same request tokens.
  EXPECT_GT(cached.stats().cached_contexts, 0);
  EXPECT_LT(cached.stats().input_tokens, plain.stats().input_tokens);
  EXPECT_EQ(cached.stats().request_tokens, plain.stats().request_tokens);
  EXPECT_EQ(plain.stats().cached_contexts, 0);
}

TEST(EvalKvCache, HellaswagAndPiqaScoresEqualThePlainPath) {
  ASSERT_TRUE(std::filesystem::is_directory(test::data_dir() + "/zeroshot")) << "data/zeroshot is missing";
  expect_same_scores("vanilla", 192);
  expect_same_scores("deepseek", 192);
  expect_same_scores("vanilla", 48);
}

}  // namespace
}  // namespace moe::eval
