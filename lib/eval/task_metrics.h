// Per-document metrics and their aggregation exactly as lm-evaluation-harness computes them
// (docs/model.md §4.2):
//   acc       = [argmax_i ll_i == gold]                       (np.argmax: first maximum)
//   acc_norm  = [argmax_i ll_i / chars(choice_i) == gold]     (code points, no delimiter)
//   winogrande acc = [argmax over contexts of ll(suffix | ctx_i) == gold]
//   lambada   acc = greedy, perplexity = exp(-mean_doc ll)
//   stderr of a mean = sample std (n - 1) / sqrt(n); "N/A" (nullopt) for n <= 1
//   stderr of lambada's perplexity = the harness's bootstrap: iters/1000 chunks, chunk i draws
//   with CPython's random.Random(i) (MT19937, init_by_array([i])) 1000 resamples
//   rnd.choices(xs, k=len(xs)), and the sample std of the replicates.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

namespace moe::eval {

int64_t argmax_first(const std::vector<double>& v);
double mean_of(const std::vector<double>& v);
double sample_stddev(const std::vector<double>& v);
std::optional<double> mean_stderr(const std::vector<double>& v);

// acc and acc_norm of one multiple-choice document.
struct ChoiceScores {
  double acc = 0, acc_norm = 0;
};
ChoiceScores score_choices(const std::vector<double>& lls, const std::vector<double>& choice_chars,
                           int64_t gold);

// TruthfulQA MC2 (truthfulqa/utils.py process_results_mc2, v0.4.9+): p_i = exp(ll_i) /
// sum_j exp(ll_j) over all choices, summed over the choices with label 1. Computed as
// exp(ll_i - max ll) so that very negative log-likelihoods do not underflow to 0/0 (the harness
// exponentiates directly; where its result is finite the two agree to rounding).
double mc2_score(const std::vector<double>& lls, const std::vector<int>& labels);

// exp(-mean(lls)): the harness's "perplexity" aggregation (lambada).
double perplexity_from_lls(const std::vector<double>& lls);
// Bootstrap stderr of perplexity_from_lls; nullopt when iters < 1000... or fewer than 2 docs.
std::optional<double> bootstrap_perplexity_stderr(const std::vector<double>& lls, int64_t iters);

// CPython's random.Random(seed) for a non-negative seed below 2^32: MT19937 seeded with
// init_by_array([seed]); random() = (a >> 5, b >> 6) -> 53-bit float.
class PyRandom {
 public:
  explicit PyRandom(uint32_t seed);
  double random();
  uint32_t genrand_uint32();

 private:
  uint32_t mt_[624];
  int index_ = 625;
};

}  // namespace moe::eval
