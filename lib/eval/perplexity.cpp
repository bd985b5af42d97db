// Corpus perplexity / bits per byte and corpus routing statistics (see perplexity.h).
#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/corpus.h"

namespace moe::eval {
namespace {

std::string join_specs(const std::vector<std::string>& specs) {
  std::string s;
  for (const auto& p : specs) s += (s.empty() ? "" : ",") + p;
  return s;
}

bool is_regex_space(char c) {  // Python re \s on ASCII (str patterns also match Unicode spaces)
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

}  // namespace

int64_t count_words(const std::string& text) {
  // re.split(r"\s+") gives one more piece than there are whitespace runs.
  int64_t runs = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (is_regex_space(text[i]) && (i == 0 || !is_regex_space(text[i - 1]))) ++runs;
  }
  return runs + 1;
}

PerplexityResult evaluate_perplexity(const std::vector<std::string>& specs,
                                     const std::string& jsonl_field, ScoringModel& model,
                                     const Encoder& encode, int32_t eos, int64_t max_docs) {
  PerplexityResult res;
  res.source = join_specs(specs);
  const auto sources = data::resolve_sources(specs, "--ppl");
  std::vector<TokenRequest> windows;
  data::for_each_document(sources, jsonl_field, [&](data::Document&& doc) {
    if (max_docs > 0 && res.documents >= max_docs) return;
    const std::vector<int32_t> toks = encode(doc.text);
    for (TokenRequest& w : rolling_windows(toks, eos, model.max_seq())) windows.push_back(std::move(w));
    res.documents += 1;
    res.tokens += static_cast<int64_t>(toks.size());
    res.bytes += static_cast<int64_t>(doc.text.size());
    res.words += count_words(doc.text);
  });
  MOE_USAGE_CHECK(res.tokens > 0, "--ppl {}: no text to score", res.source);
  spdlog::info("ppl {}: {} documents, {} tokens, {} windows", res.source, res.documents,
               res.tokens, windows.size());
  LoglikScorer scorer(model);
  for (const ScoredRequest& s : scorer.score(windows, eos)) res.nll_sum -= s.ll;
  res.stats = scorer.stats();
  res.perplexity = std::exp(res.nll_sum / static_cast<double>(res.tokens));
  res.bits_per_byte = res.nll_sum / (std::log(2.0) * static_cast<double>(res.bytes));
  res.byte_perplexity = std::exp(res.nll_sum / static_cast<double>(res.bytes));
  res.word_perplexity = std::exp(res.nll_sum / static_cast<double>(res.words));
  return res;
}

RoutingEvalResult evaluate_routing(const std::vector<std::string>& specs,
                                   const std::string& jsonl_field, ScoringModel& model,
                                   const Encoder& encode, int32_t eos, bool overlap_measured,
                                   int64_t max_tokens) {
  RoutingEvalResult res;
  res.source = join_specs(specs);
  const auto sources = data::resolve_sources(specs, "--routing");
  std::vector<int32_t> stream;
  data::for_each_document(sources, jsonl_field, [&](data::Document&& doc) {
    if (max_tokens > 0 && static_cast<int64_t>(stream.size()) >= max_tokens) return;
    stream.push_back(eos);
    const std::vector<int32_t> toks = encode(doc.text);
    stream.insert(stream.end(), toks.begin(), toks.end());
  });
  if (max_tokens > 0 && static_cast<int64_t>(stream.size()) > max_tokens) stream.resize(max_tokens);
  MOE_USAGE_CHECK(!stream.empty(), "--routing {}: no text", res.source);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model.max_seq(), total = static_cast<int64_t>(stream.size());
  const int64_t full_rows = total / L;
  RoutingAccumulator acc(overlap_measured);
  auto run = [&](int64_t first_row, int64_t rows, int64_t seq) {
    Batch b;
    b.batch = rows;
    b.seq = seq;
    b.inputs.assign(stream.begin() + first_row * L, stream.begin() + first_row * L + rows * seq);
    b.targets.assign(rows * seq, -1);
    for (int64_t i = 0; i < rows * seq; ++i) {
      const int64_t pos = first_row * L + i;
      if (pos + 1 < total) b.targets[i] = stream[pos + 1];
    }
    model.forward(b);
    const std::vector<LayerRouting> routing = model.routing();
    MOE_USAGE_CHECK(!routing.empty(), "--routing: the model has no MoE layer");
    acc.add(routing);
    res.stats.forward_passes += 1;
    res.stats.rows += rows;
    res.stats.request_tokens += rows * seq;
    res.stats.input_tokens += rows * seq;
    res.stats.padded_tokens += rows * seq;
  };
  for (int64_t r = 0; r < full_rows; r += model.max_rows()) {
    run(r, std::min(model.max_rows(), full_rows - r), L);
  }
  if (total % L != 0) run(full_rows, 1, total % L);
  res.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.summary = acc.finish();
  return res;
}

}  // namespace moe::eval
