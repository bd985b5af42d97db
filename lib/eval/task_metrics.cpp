// Harness metrics, stderr and the CPython-compatible bootstrap (see task_metrics.h).
#include "eval/task_metrics.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moe::eval {

int64_t argmax_first(const std::vector<double>& v) {
  MOE_CHECK(!v.empty(), "argmax of an empty list");
  int64_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int64_t>(i);
  }
  return best;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

double sample_stddev(const std::vector<double>& v) {
  const double mu = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - mu) * (x - mu);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::optional<double> mean_stderr(const std::vector<double>& v) {
  if (v.size() <= 1) return std::nullopt;
  return sample_stddev(v) / std::sqrt(static_cast<double>(v.size()));
}

ChoiceScores score_choices(const std::vector<double>& lls, const std::vector<double>& chars,
                           int64_t gold) {
  MOE_CHECK(lls.size() == chars.size(), "score_choices: {} log-likelihoods, {} lengths",
            lls.size(), chars.size());
  std::vector<double> norm(lls.size());
  for (size_t i = 0; i < lls.size(); ++i) norm[i] = lls[i] / chars[i];  // /0 -> +-inf as numpy
  ChoiceScores s;
  s.acc = argmax_first(lls) == gold ? 1.0 : 0.0;
  s.acc_norm = argmax_first(norm) == gold ? 1.0 : 0.0;
  return s;
}

double mc2_score(const std::vector<double>& lls, const std::vector<int>& labels) {
  MOE_CHECK(!lls.empty() && lls.size() == labels.size(), "mc2: {} log-likelihoods, {} labels",
            lls.size(), labels.size());
  double top = lls[0];
  for (double ll : lls) top = std::max(top, ll);
  double all = 0, true_mass = 0;
  for (size_t i = 0; i < lls.size(); ++i) {
    const double p = std::exp(lls[i] - top);
    all += p;
    if (labels[i] == 1) true_mass += p;
  }
  return true_mass / all;
}

double perplexity_from_lls(const std::vector<double>& lls) { return std::exp(-mean_of(lls)); }

std::optional<double> bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters) {
  const int64_t chunk = std::min<int64_t>(1000, iters);
  if (iters <= 0 || lls.size() <= 1) return std::nullopt;
  const int64_t n = static_cast<int64_t>(lls.size());
  const double nf = static_cast<double>(n);
  std::vector<double> replicates;
  replicates.reserve(iters);
  std::vector<double> sample(n);
  for (int64_t i = 0; i < iters / chunk; ++i) {
    PyRandom rnd(static_cast<uint32_t>(i));
    for (int64_t r = 0; r < chunk; ++r) {
      for (int64_t j = 0; j < n; ++j) sample[j] = lls[static_cast<size_t>(rnd.random() * nf)];
      replicates.push_back(perplexity_from_lls(sample));
    }
  }
  if (replicates.size() <= 1) return std::nullopt;
  return sample_stddev(replicates);
}

// ---- MT19937 as in CPython's _randommodule.c ----------------------------------------------------

PyRandom::PyRandom(uint32_t seed) {
  // init_genrand(19650218) then init_by_array(key = [seed], key_length = 1).
  mt_[0] = 19650218U;
  for (int i = 1; i < 624; ++i) {
    mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  int i = 1, j = 0;
  const uint32_t key[1] = {seed};
  const int key_length = 1;
  for (int k = 624; k > 0; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + key[j] +
             static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
    if (j >= key_length) j = 0;
  }
  for (int k = 623; k > 0; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
  }
  mt_[0] = 0x80000000U;
  index_ = 624;
}

uint32_t PyRandom::genrand_uint32() {
  static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
  if (index_ >= 624) {
    int kk = 0;
    for (; kk < 624 - 397; ++kk) {
      const uint32_t y = (mt_[kk] & 0x80000000U) | (mt_[kk + 1] & 0x7fffffffU);
      mt_[kk] = mt_[kk + 397] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    for (; kk < 623; ++kk) {
      const uint32_t y = (mt_[kk] & 0x80000000U) | (mt_[kk + 1] & 0x7fffffffU);
      mt_[kk] = mt_[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    const uint32_t y = (mt_[623] & 0x80000000U) | (mt_[0] & 0x7fffffffU);
    mt_[623] = mt_[396] ^ (y >> 1) ^ mag01[y & 0x1U];
    index_ = 0;
  }
  uint32_t y = mt_[index_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= (y >> 18);
  return y;
}

double PyRandom::random() {
  const uint32_t a = genrand_uint32() >> 5, b = genrand_uint32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

}  // namespace moe::eval
