// Batched scoring with prefix sharing (see loglik_scorer.h).
#include "eval/loglik_scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moe::eval {
namespace {

size_t input_len(const TokenRequest& r) { return r.tokens.size() - 1; }

// a's input (tokens without the last) is a prefix of b's input.
bool input_is_prefix(const TokenRequest& a, const TokenRequest& b) {
  const size_t la = input_len(a), lb = input_len(b);
  return la <= lb && std::equal(a.tokens.begin(), a.tokens.begin() + la, b.tokens.begin());
}

// For every request, the request whose row serves it (itself, or one whose input it prefixes).
std::vector<size_t> assign_hosts(const std::vector<TokenRequest>& reqs) {
  std::vector<size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::lexicographical_compare(reqs[a].tokens.begin(), reqs[a].tokens.end() - 1,
                                        reqs[b].tokens.begin(), reqs[b].tokens.end() - 1);
  });
  // In lexicographic order, everything between a sequence and a longer one it prefixes also
  // starts with it, so the host of a request is the host of its successor when it prefixes it.
  std::vector<size_t> host(reqs.size());
  for (size_t i = order.size(); i-- > 0;) {
    const size_t r = order[i];
    host[r] = r;
    if (i + 1 < order.size() && input_is_prefix(reqs[r], reqs[order[i + 1]])) {
      host[r] = host[order[i + 1]];
    }
  }
  return host;
}

// log p(target) and whether it is the argmax, from one row of fp32 logits.
std::pair<double, bool> token_logprob(const float* logits, int64_t vocab, int32_t target) {
  float max_v = logits[0];
  int64_t arg = 0;
  for (int64_t v = 1; v < vocab; ++v) {
    if (logits[v] > max_v) {
      max_v = logits[v];
      arg = v;
    }
  }
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max_v);
  const double lp = static_cast<double>(logits[target]) - max_v - std::log(sum);
  return {lp, arg == target};
}

}  // namespace

void ScoringStats::add(const ScoringStats& o) {
  requests += o.requests;
  rows += o.rows;
  forward_passes += o.forward_passes;
  input_tokens += o.input_tokens;
  padded_tokens += o.padded_tokens;
  seconds += o.seconds;
}

std::vector<ScoredRequest> LoglikScorer::score(const std::vector<TokenRequest>& reqs,
                                               int32_t pad_token) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t vocab = model_.vocab(), max_seq = model_.max_seq();
  for (const auto& r : reqs) {
    MOE_CHECK(r.tokens.size() >= 2 || r.n_targets == 0, "scorer: request with {} tokens",
              r.tokens.size());
    MOE_CHECK(static_cast<int64_t>(input_len(r)) <= max_seq,
              "scorer: request input of {} tokens exceeds the model context {}", input_len(r),
              max_seq);
    MOE_CHECK(r.n_targets >= 0 && r.n_targets <= static_cast<int64_t>(r.tokens.size()) - 1,
              "scorer: {} targets in a request of {} tokens", r.n_targets, r.tokens.size());
    for (int32_t t : r.tokens) {
      MOE_CHECK(t >= 0 && t < vocab, "scorer: token id {} outside the vocabulary of {}", t, vocab);
    }
  }
  std::vector<ScoredRequest> out(reqs.size());
  const std::vector<size_t> host = assign_hosts(reqs);
  std::vector<std::vector<size_t>> served(reqs.size());
  std::vector<size_t> rows;
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].n_targets == 0) continue;  // nothing to score: ll 0, greedy
    if (host[i] == i) rows.push_back(i);
    served[host[i]].push_back(i);
  }
  // Longest rows first; equal lengths keep request order (deterministic).
  std::stable_sort(rows.begin(), rows.end(),
                   [&](size_t a, size_t b) { return input_len(reqs[a]) > input_len(reqs[b]); });
  for (size_t begin = 0; begin < rows.size();) {
    const int64_t seq = static_cast<int64_t>(input_len(reqs[rows[begin]]));  // longest first
    const int64_t fit = std::max<int64_t>(1, max_logits_floats_ / (seq * vocab));
    const int64_t max_rows = std::min(model_.max_rows(), fit);
    const size_t end = std::min(rows.size(), begin + static_cast<size_t>(max_rows));
    Batch b;
    b.batch = static_cast<int64_t>(end - begin);
    b.seq = seq;
    b.inputs.assign(b.batch * b.seq, pad_token);
    b.targets.assign(b.batch * b.seq, -1);
    for (size_t r = begin; r < end; ++r) {
      const TokenRequest& req = reqs[rows[r]];
      const int64_t n = static_cast<int64_t>(input_len(req)), row = r - begin;
      std::copy(req.tokens.begin(), req.tokens.end() - 1, b.inputs.begin() + row * b.seq);
      for (int64_t p = n - req.n_targets; p < n; ++p) b.targets[row * b.seq + p] = req.tokens[p + 1];
      stats_.input_tokens += n;
    }
    model_.forward(b);
    const std::vector<float> logits = model_.logits();
    MOE_CHECK(static_cast<int64_t>(logits.size()) == b.batch * b.seq * vocab,
              "scorer: model returned {} logits for {} x {} x {}", logits.size(), b.batch, b.seq,
              vocab);
    for (size_t r = begin; r < end; ++r) {
      const int64_t row = r - begin;
      for (size_t i : served[rows[r]]) {
        const TokenRequest& req = reqs[i];
        const int64_t n = static_cast<int64_t>(input_len(req));
        ScoredRequest& s = out[i];
        for (int64_t p = n - req.n_targets; p < n; ++p) {
          const auto [lp, is_max] =
              token_logprob(&logits[(row * b.seq + p) * vocab], vocab, req.tokens[p + 1]);
          s.ll += lp;
          s.greedy = s.greedy && is_max;
        }
      }
    }
    stats_.forward_passes += 1;
    stats_.rows += b.batch;
    stats_.padded_tokens += b.batch * b.seq;
    begin = end;
  }
  for (size_t i = 0; i < reqs.size(); ++i) out[i].n_targets = reqs[i].n_targets;
  stats_.requests += static_cast<int64_t>(reqs.size());
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace moe::eval
