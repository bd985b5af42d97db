// Token-resident expert parallelism for serving (forward only): the expert-parallel path in which
// expert placement changes what crosses devices (docs/infer.md, "Expert-parallel serving").
//
// Training's expert parallelism (model/expert_parallel.cpp) keeps every token on its home rank:
// a token's rows go to its experts' owners and straight back, so the bytes depend only on which
// experts sit on the home rank, and no placement can change their expectation. Here, as in
// ExFlow (arXiv 2401.08383), a token's hidden state lives on one rank and moves with it: after
// each MoE layer it goes to the rank of its top-1 expert there (the largest router probability
// among the selected, ties to the lower id: the trace's slot 0). Consecutive experts on one rank
// then cost nothing, which is what routing/placement.h counts and path-aware placement minimises.
//
// Every rank serves its own batch (its home tokens) and holds the routed experts a Placement
// gives it (E / P per layer, any subset) plus every dense weight. Per layer, on each rank, for
// the tokens resident there:
//   attention: RMSNorm, q/k/v, RoPE at each token's position; the keys and values of all
//     resident tokens go to every rank (context coherence: attention needs the whole prefix,
//     wherever its tokens are; the same bytes for every placement), and each token attends to
//     its sequence's prefix and itself (attention_forward_cached, one query per row);
//   dense FFN: where the token is;
//   MoE: router where the token is; each (token, slot) row goes to the rank of its expert
//     (all-to-all), the owners run grouped GEMMs, the outputs come back and are combined with
//     the router weights; shared experts where the token is; then the token migrates to the rank
//     of its top-1 expert (all-to-all of hidden states).
// After the last layer the hidden states return home, where the final norm and the output head
// give the batch's logits. The logits equal MoeModel::forward's up to float rounding (the tests
// bound them by 1e-5); the results do not depend on the placement.
//
// Every call is a collective over the communicator: ranks with nothing left to score keep calling
// forward() with an empty batch until it returns false (every rank empty).
#pragma once
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "model/model.h"
#include "routing/placement.h"

namespace moe::infer {

struct ResidentEpStats {
  int64_t forwards = 0;  // collective forward calls with work on some rank
  int64_t tokens = 0;    // this rank's home tokens (padding included)
  // Bytes this rank sent to other ranks (rows a rank keeps are not counted), by purpose.
  int64_t context_bytes = 0;  // keys, values and token ids for attention (placement-independent)
  int64_t expert_bytes = 0;   // (token, slot) rows to remote experts, their outputs back, counts
  int64_t migrate_bytes = 0;  // hidden states (and ids) moving to their top-1 expert's rank
  int64_t home_bytes = 0;     // hidden states (and ids) returning home after the last layer
  // (token, slot) visits of MoE layers after the first, from the rank the token sits on (its
  // top-1 expert's at the layer before), and those whose expert is on another rank: on the same
  // tokens these are routing::count_hops' hops and crossing. The first MoE layer starts from
  // the home rank and is counted apart.
  int64_t hops = 0, crossing = 0;
  int64_t first_hops = 0, first_crossing = 0;
  // Tokens resident here at each layer's attention, summed over layers and passes: the work
  // this rank did for the dense part (ranks are balanced when these are equal).
  int64_t resident_token_layers = 0;
  // The same with each layer's largest count over the ranks (every rank adds the same): the
  // layer's exchange waits for the busiest rank, so this over the mean of the previous one is
  // the imbalance the passes pay for, layer by layer.
  int64_t busiest_token_layers = 0;
  // (token, slot) rows this rank's experts computed, summed over MoE layers and passes.
  int64_t expert_rows = 0;
  double seconds = 0, comm_seconds = 0;  // in forward(); in its collectives

  int64_t total_bytes() const { return context_bytes + expert_bytes + migrate_bytes + home_bytes; }
};

class ResidentExpertParallel {
 public:
  // `model` (f32, on a CPU backend) provides the weights; `placement` must have
  // comm.size() devices and the model's MoE layers and experts. This rank copies its experts.
  ResidentExpertParallel(MoeModel& model, Communicator& comm, const routing::Placement& placement);
  ~ResidentExpertParallel();
  ResidentExpertParallel(const ResidentExpertParallel&) = delete;
  ResidentExpertParallel& operator=(const ResidentExpertParallel&) = delete;

  // Collective. `batch` (targets ignored) may be empty (batch = 0) on any rank. Returns false,
  // having done nothing, when every rank's batch is empty.
  bool forward(const Batch& batch);
  // [batch * seq, vocab] of this rank's last non-empty batch.
  const std::vector<float>& logits() const { return logits_; }
  const ResidentEpStats& stats() const { return stats_; }
  void reset_stats() { stats_ = ResidentEpStats{}; }
  const routing::Placement& placement() const { return placement_; }

 private:
  struct Impl;
  routing::Placement placement_;
  std::vector<float> logits_;
  ResidentEpStats stats_;
  Impl* impl_;
};

}  // namespace moe::infer
