// Batched scoring with prefix sharing and KV-cache context sharing (see loglik_scorer.h).
#include "eval/loglik_scorer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moe::eval {
namespace {

int64_t input_len(const TokenRequest& r) { return static_cast<int64_t>(r.tokens.size()) - 1; }
int64_t first_scored(const TokenRequest& r) { return input_len(r) - r.n_targets; }

// a's input (tokens without the last) is a prefix of b's input.
bool input_is_prefix(const TokenRequest& a, const TokenRequest& b) {
  const int64_t la = input_len(a), lb = input_len(b);
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

// One row to run: the input of request `host`, serving every request in `served` (the host
// included). Logits are needed for positions [first, n).
struct Row {
  size_t host = 0;
  std::vector<size_t> served;
  int64_t first = 0, n = 0;
};

// What every pass needs.
struct Pass {
  const std::vector<TokenRequest>& reqs;
  std::vector<ScoredRequest>& out;
  ScoringModel& model;
  ScoringStats& stats;
  int32_t pad;
  int64_t vocab, max_logits_floats;

  // Rows of `seq` positions per pass within the logits budget and the model's limit.
  int64_t rows_fitting(int64_t seq, int64_t model_limit) const {
    return std::max<int64_t>(1, std::min(model_limit, max_logits_floats / (seq * vocab)));
  }
  std::vector<float> logits(int64_t rows, int64_t seq) {
    std::vector<float> l = model.logits();
    MOE_CHECK(static_cast<int64_t>(l.size()) == rows * seq * vocab,
              "scorer: model returned {} logits for {} x {} x {}", l.size(), rows, seq, vocab);
    return l;
  }
  // Adds the scores of the requests `row` serves. `logits` holds the row's positions from
  // `offset` on.
  void accumulate(const Row& row, const float* logits, int64_t offset) {
    for (size_t i : row.served) {
      const TokenRequest& req = reqs[i];
      ScoredRequest& s = out[i];
      for (int64_t p = first_scored(req); p < input_len(req); ++p) {
        const auto [lp, is_max] = token_logprob(logits + (p - offset) * vocab, vocab,
                                                req.tokens[p + 1]);
        s.ll += lp;
        s.greedy = s.greedy && is_max;
      }
    }
  }
  // Row `r` of b: the row's input positions [from, row.n), targets where scored.
  void fill_row(Batch& b, int64_t r, const Row& row, int64_t from) const {
    const TokenRequest& req = reqs[row.host];
    std::copy(req.tokens.begin() + from, req.tokens.begin() + row.n,
              b.inputs.begin() + r * b.seq);
    for (int64_t p = row.first; p < row.n; ++p) b.targets[r * b.seq + p - from] = req.tokens[p + 1];
  }
  void count(const Batch& b, int64_t real_tokens) {
    stats.forward_passes += 1;
    stats.rows += b.batch;
    stats.input_tokens += real_tokens;
    stats.padded_tokens += b.batch * b.seq;
  }
};

Batch padded_batch(int64_t rows, int64_t seq, int32_t pad) {
  Batch b;
  b.batch = rows;
  b.seq = seq;
  b.inputs.assign(rows * seq, pad);
  b.targets.assign(rows * seq, -1);
  return b;
}

// The end of a pass over items [begin, size) sorted longest first (len(i): item i's length): at
// most max_items items, and only items at least 3/4 as long as the first, so that right padding
// stays under a quarter of the pass. (Packing by tokens puts ~100 short continuations in one
// pass: without the bound 26% of the tokens computed for hellaswag + piqa were padding, with it
// 11%, for 99 passes instead of 38 and no slower.)
template <typename Len>
size_t pass_end(size_t begin, size_t size, int64_t max_items, Len len) {
  const int64_t seq = len(begin);
  size_t end = begin + 1;
  while (end < size && static_cast<int64_t>(end - begin) < max_items && 4 * len(end) >= 3 * seq) {
    ++end;
  }
  return end;
}

// Whole rows, up to max_rows() per pass, longest first (equal lengths keep their order).
void run_plain(Pass& ps, std::vector<const Row*> rows) {
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Row* a, const Row* b) { return a->n > b->n; });
  for (size_t begin = 0; begin < rows.size();) {
    const int64_t seq = rows[begin]->n;
    const size_t end = std::min(rows.size(), begin + static_cast<size_t>(ps.rows_fitting(
                                                         seq, ps.model.max_rows())));
    Batch b = padded_batch(static_cast<int64_t>(end - begin), seq, ps.pad);
    int64_t real = 0;
    for (size_t r = begin; r < end; ++r) {
      ps.fill_row(b, static_cast<int64_t>(r - begin), *rows[r], 0);
      real += rows[r]->n;
    }
    ps.model.forward(b);
    const std::vector<float> logits = ps.logits(b.batch, b.seq);
    for (size_t r = begin; r < end; ++r) {
      ps.accumulate(*rows[r], &logits[(r - begin) * seq * ps.vocab], 0);
    }
    ps.count(b, real);
    begin = end;
  }
}

// The continuation passes of one context pass: row r of `rows` continues context `ctx_row[r]`.
void run_continuations(Pass& ps, const std::vector<const Row*>& rows,
                       const std::vector<int32_t>& ctx_row_of) {
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  auto len = [&](size_t i) { return rows[i]->n - rows[i]->first; };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len(a) > len(b); });
  const int64_t max_tokens = ps.model.max_tokens();
  for (size_t begin = 0; begin < order.size();) {
    const int64_t seq = len(order[begin]);
    const int64_t fit = std::min(max_tokens / seq, ps.model.max_cache_pass_rows());
    const size_t end = pass_end(begin, order.size(), ps.rows_fitting(seq, fit),
                                [&](size_t i) { return len(order[i]); });
    Batch b = padded_batch(static_cast<int64_t>(end - begin), seq, ps.pad);
    std::vector<int32_t> ctx_row, ctx_len;
    int64_t real = 0;
    for (size_t r = begin; r < end; ++r) {
      const Row& row = *rows[order[r]];
      ps.fill_row(b, static_cast<int64_t>(r - begin), row, row.first);
      ctx_row.push_back(ctx_row_of[order[r]]);
      ctx_len.push_back(static_cast<int32_t>(row.first));
      real += len(order[r]);
    }
    ps.model.forward_cached(b, ctx_row, ctx_len);
    const std::vector<float> logits = ps.logits(b.batch, b.seq);
    for (size_t r = begin; r < end; ++r) {
      const Row& row = *rows[order[r]];
      ps.accumulate(row, &logits[(r - begin) * seq * ps.vocab], row.first);
    }
    ps.count(b, real);
    ps.stats.cached_rows += b.batch;
    begin = end;
  }
}

// Groups of rows sharing one context (rows[0]'s input before `first`), longest context first:
// each context runs once into the cache, then the rows continue it.
void run_cached(Pass& ps, std::vector<std::vector<const Row*>> groups) {
  std::stable_sort(groups.begin(), groups.end(),
                   [](const auto& a, const auto& b) { return a[0]->first > b[0]->first; });
  for (size_t begin = 0; begin < groups.size();) {
    const int64_t seq = groups[begin][0]->first;
    const int64_t fit = std::min(ps.model.max_tokens() / seq, ps.model.max_cache_pass_rows());
    const size_t end = pass_end(begin, groups.size(), std::max<int64_t>(1, fit),
                                [&](size_t g) { return groups[g][0]->first; });
    Batch ctx;
    ctx.batch = static_cast<int64_t>(end - begin);
    ctx.seq = seq;
    ctx.inputs.assign(ctx.batch * seq, ps.pad);
    std::vector<const Row*> rows;
    std::vector<int32_t> ctx_row_of;
    int64_t real = 0;
    for (size_t g = begin; g < end; ++g) {
      const Row& head = *groups[g][0];
      const TokenRequest& req = ps.reqs[head.host];
      std::copy(req.tokens.begin(), req.tokens.begin() + head.first,
                ctx.inputs.begin() + static_cast<int64_t>(g - begin) * seq);
      real += head.first;
      for (const Row* row : groups[g]) {
        rows.push_back(row);
        ctx_row_of.push_back(static_cast<int32_t>(g - begin));
      }
    }
    ps.model.prefill(ctx);
    ps.count(ctx, real);
    ps.stats.cached_contexts += ctx.batch;
    run_continuations(ps, rows, ctx_row_of);
    begin = end;
  }
}

// Rows by identical context (input before `first`): groups of two or more with a non-empty
// context, and lone rows whose context is at least 4x their scored positions, in the order of
// their first row; the other rows in `single`.
std::vector<std::vector<const Row*>> group_by_context(const std::vector<Row>& rows,
                                                      const std::vector<TokenRequest>& reqs,
                                                      std::vector<const Row*>& single) {
  auto context = [&](const Row& r) { return reqs[r.host].tokens.begin(); };
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  auto less = [&](size_t a, size_t b) {
    const Row &ra = rows[a], &rb = rows[b];
    if (ra.first != rb.first) return ra.first < rb.first;
    return std::lexicographical_compare(context(ra), context(ra) + ra.first, context(rb),
                                        context(rb) + rb.first);
  };
  std::stable_sort(order.begin(), order.end(), less);
  std::vector<std::vector<size_t>> found;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i > 0 && !less(order[i - 1], order[i])) {
      found.back().push_back(order[i]);  // equal context (stable: increasing row index)
    } else {
      found.push_back({order[i]});
    }
  }
  std::sort(found.begin(), found.end());  // by first row index: request order, deterministic
  std::vector<std::vector<const Row*>> groups;
  for (const auto& f : found) {
    // A lone row goes through the cache too when its context dwarfs its scored positions (MMLU's
    // four one-token answers share one row; lambada's last word): prefill computes no
    // vocabulary head, so the head and the host copy of logits shrink to the scored positions.
    const Row& head = rows[f[0]];
    const bool lone_long_context = f.size() == 1 && 4 * (head.n - head.first) <= head.first;
    if ((f.size() >= 2 || lone_long_context) && head.first > 0) {
      groups.emplace_back();
      for (size_t i : f) groups.back().push_back(&rows[i]);
    } else {
      for (size_t i : f) single.push_back(&rows[i]);
    }
  }
  return groups;
}

void check_requests(const std::vector<TokenRequest>& reqs, int64_t vocab, int64_t max_seq) {
  for (const auto& r : reqs) {
    MOE_CHECK(r.tokens.size() >= 2 || r.n_targets == 0, "scorer: request with {} tokens",
              r.tokens.size());
    MOE_CHECK(input_len(r) <= max_seq,
              "scorer: request input of {} tokens exceeds the model context {}", input_len(r),
              max_seq);
    MOE_CHECK(r.n_targets >= 0 && r.n_targets <= static_cast<int64_t>(r.tokens.size()) - 1,
              "scorer: {} targets in a request of {} tokens", r.n_targets, r.tokens.size());
    for (int32_t t : r.tokens) {
      MOE_CHECK(t >= 0 && t < vocab, "scorer: token id {} outside the vocabulary of {}", t, vocab);
    }
  }
}

}  // namespace

void ScoringStats::add(const ScoringStats& o) {
  requests += o.requests;
  rows += o.rows;
  forward_passes += o.forward_passes;
  request_tokens += o.request_tokens;
  input_tokens += o.input_tokens;
  padded_tokens += o.padded_tokens;
  cached_contexts += o.cached_contexts;
  cached_rows += o.cached_rows;
  seconds += o.seconds;
}

std::vector<ScoredRequest> LoglikScorer::score(const std::vector<TokenRequest>& reqs,
                                               int32_t pad_token) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t vocab = model_.vocab();
  check_requests(reqs, vocab, model_.max_seq());
  std::vector<ScoredRequest> out(reqs.size());
  const std::vector<size_t> host = assign_hosts(reqs);
  std::vector<size_t> row_of(reqs.size());
  std::vector<Row> rows;
  for (size_t i = 0; i < reqs.size(); ++i) {  // hosts first, in request order
    if (reqs[i].n_targets == 0 || host[i] != i) continue;
    row_of[i] = rows.size();
    rows.push_back({i, {}, input_len(reqs[i]), input_len(reqs[i])});
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].n_targets == 0) continue;  // nothing to score: ll 0, greedy
    Row& row = rows[row_of[host[i]]];
    row.served.push_back(i);
    row.first = std::min(row.first, first_scored(reqs[i]));
    stats_.request_tokens += input_len(reqs[i]);
  }
  Pass ps{reqs, out, model_, stats_, pad_token, vocab, max_logits_floats_};
  std::vector<const Row*> single;
  if (kv_cache_ && model_.has_kv_cache()) {
    run_cached(ps, group_by_context(rows, reqs, single));
  } else {
    for (const Row& r : rows) single.push_back(&r);
  }
  run_plain(ps, single);
  for (size_t i = 0; i < reqs.size(); ++i) out[i].n_targets = reqs[i].n_targets;
  stats_.requests += static_cast<int64_t>(reqs.size());
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace moe::eval
