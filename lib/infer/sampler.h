// Next-token choice for generation: greedy (temperature 0, the default) or sampling from
// softmax(logits / temperature) restricted to the top_k most likely tokens and then to the
// smallest set whose probability reaches top_p (nucleus), renormalised.
//
// Determinism: every sequence (row) has its own random stream, seeded from (seed, row) by
// SplitMix64, and draws exactly one 53-bit uniform per sampled token from a std::mt19937_64
// (whose output sequence the C++ standard fixes), so the same seed, prompts and logits give the
// same tokens on every platform, whatever the batch composition of other rows.
// Ties: candidates are ordered by logit, then by lower token id.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace moe::infer {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, lower id on ties)
  int64_t top_k = 0;         // 0: no top-k cut
  double top_p = 1.0;        // 1: no nucleus cut
  uint64_t seed = 0;
};

// Usage errors (exit 2) for a negative temperature, top_k < 0, top_p outside (0, 1].
void validate_sampling(const SamplingOptions& o);

// The distribution sample() draws from, over all V tokens (zeros outside the kept set); for
// greedy the one-hot of the argmax. Exposed for tests.
std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const SamplingOptions& o);

class Sampler {
 public:
  // Rows 0 .. rows-1 draw from the streams of sequences first_row .. first_row + rows - 1.
  Sampler(const SamplingOptions& o, int64_t rows, int64_t first_row = 0);
  // Chooses the next token of `row` from its logits [vocab].
  int32_t sample(int64_t row, const float* logits, int64_t vocab);

 private:
  SamplingOptions opt_;
  std::vector<std::mt19937_64> rng_;
};

}  // namespace moe::infer
