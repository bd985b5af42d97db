// Greedy / temperature / top-k / top-p token choice (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moe::infer {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int32_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t v = 1; v < vocab; ++v) {
    if (logits[v] > logits[best]) best = v;
  }
  return static_cast<int32_t>(best);
}

// Candidate ids in the order sampling walks them, with their renormalised probabilities.
void kept_candidates(const float* logits, int64_t vocab, const SamplingOptions& o,
                     std::vector<int32_t>& ids, std::vector<double>& probs) {
  ids.resize(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  auto before = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = ids.size();
  if (o.top_k > 0 && static_cast<size_t>(o.top_k) < keep) {
    keep = static_cast<size_t>(o.top_k);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<int64_t>(keep), ids.end(), before);
  } else {
    std::sort(ids.begin(), ids.end(), before);
  }
  ids.resize(keep);
  const double inv_t = 1.0 / o.temperature, top = static_cast<double>(logits[ids[0]]);
  probs.resize(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp((static_cast<double>(logits[ids[i]]) - top) * inv_t);
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;
  if (o.top_p < 1.0) {  // smallest prefix whose mass reaches top_p
    double mass = 0;
    size_t n = 0;
    while (n < keep && mass < o.top_p) mass += probs[n++];
    ids.resize(n);
    probs.resize(n);
    for (double& p : probs) p /= mass;
  }
}

}  // namespace

void validate_sampling(const SamplingOptions& o) {
  MOE_USAGE_CHECK(std::isfinite(o.temperature) && o.temperature >= 0,
                  "--temperature must be >= 0 (0: greedy), got {}", o.temperature);
  MOE_USAGE_CHECK(o.top_k >= 0, "--top-k must be >= 0 (0: off), got {}", o.top_k);
  MOE_USAGE_CHECK(o.top_p > 0 && o.top_p <= 1, "--top-p must lie in (0, 1], got {}", o.top_p);
}

std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const SamplingOptions& o) {
  std::vector<double> dist(static_cast<size_t>(vocab), 0.0);
  if (o.temperature == 0) {
    dist[static_cast<size_t>(argmax(logits, vocab))] = 1.0;
    return dist;
  }
  std::vector<int32_t> ids;
  std::vector<double> probs;
  kept_candidates(logits, vocab, o, ids, probs);
  for (size_t i = 0; i < ids.size(); ++i) dist[static_cast<size_t>(ids[i])] = probs[i];
  return dist;
}

Sampler::Sampler(const SamplingOptions& o, int64_t rows, int64_t first_row) : opt_(o) {
  validate_sampling(o);
  for (int64_t r = first_row; r < first_row + rows; ++r) {
    rng_.emplace_back(splitmix64(o.seed ^ splitmix64(static_cast<uint64_t>(r) + 1)));
  }
}

int32_t Sampler::sample(int64_t row, const float* logits, int64_t vocab) {
  MOE_CHECK(row >= 0 && row < static_cast<int64_t>(rng_.size()), "sampler: row {} of {}", row,
            rng_.size());
  if (opt_.temperature == 0) return argmax(logits, vocab);
  std::vector<int32_t> ids;
  std::vector<double> probs;
  kept_candidates(logits, vocab, opt_, ids, probs);
  const double u = static_cast<double>(rng_[static_cast<size_t>(row)]() >> 11) * 0x1.0p-53;
  double acc = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    acc += probs[i];
    if (u < acc) return ids[i];
  }
  return ids.back();  // u within rounding of 1
}

}  // namespace moe::infer
