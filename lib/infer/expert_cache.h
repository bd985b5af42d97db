// Expert offload: at most C routed experts of each MoE layer are resident in the model's expert
// weights; the others are read on demand from the checkpoint's model.safetensors (pread at the
// tensors' byte offsets) when the router selects them, evicting the least recently used
// resident expert of the layer that the current pass does not need. Non-resident experts'
// weights are overwritten with NaN, so a forward pass that used one would show it in its logits:
// equal outputs prove that every expert used was resident with the checkpoint's exact bytes.
//
// Prefetch "pathway": when layer m's experts are known, the experts most likely at the next MoE
// layer, by sum over the pass's tokens of P(v | top-1 expert at m) from a calibration trace's
// transition counts (routing/placement.h), are read by a background thread while layer m
// computes, and installed when layer m+1 is reached (before its demand is counted). The victim
// of a prefetched expert is chosen when the read is issued, by LRU, without knowing layer m+1's
// demand. "none": LRU on demand only.
//
// What this does not do: the model still allocates the full [E, ...] expert tensors (the
// grouped GEMM indexes experts by id), so resident memory is not reduced; what is measured is
// the hit rate, the bytes that must be read from storage per token, and the decode latency
// those reads cost.
#pragma once
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "routing/placement.h"

namespace moe::infer {

struct ExpertCacheStats {
  int64_t tokens = 0;           // tokens through the first MoE layer
  int64_t accesses = 0, hits = 0, misses = 0;
  int64_t prefetched = 0, prefetch_hits = 0;  // experts read ahead; of them, used by demand
  int64_t bytes_read = 0;       // demand + prefetch reads
  double read_seconds = 0;      // demand reads (blocking) only
  double hit_rate() const { return accesses > 0 ? static_cast<double>(hits) / accesses : 0; }
  double bytes_per_token() const {
    return tokens > 0 ? static_cast<double>(bytes_read) / static_cast<double>(tokens) : 0;
  }
};

class ExpertCache {
 public:
  // capacity C: usage error (exit 2) unless top_k <= C <= E. prefetch "none" or "pathway" (needs
  // `pathway`, the calibration transition counts of this model). Experts 0 .. C-1 of every layer
  // start resident (already loaded); the rest are evicted now. Installs itself as the model's
  // expert hook; the destructor removes it and reloads nothing (the model is left partial).
  ExpertCache(MoeModel& model, const std::string& safetensors_path, int64_t capacity,
              const std::string& prefetch, const routing::TransitionGraph* pathway = nullptr);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  const ExpertCacheStats& stats() const { return stats_; }
  void reset_stats() { stats_ = ExpertCacheStats{}; }
  int64_t expert_bytes() const { return expert_bytes_; }  // one expert's gate + up + down
  int64_t resident(int64_t moe_layer) const;

 private:
  struct Slot {
    int64_t last_use = -1;     // -1: not resident
    bool prefetched = false;   // read ahead and not yet used by demand
  };
  struct Pending {
    int64_t layer = -1;
    std::vector<int64_t> experts, victims;
    std::future<std::vector<std::vector<char>>> data;
  };
  void on_layer(int64_t m, const Tensor& idx);
  std::vector<char> read_expert(int64_t m, int64_t e) const;
  void install(int64_t m, int64_t e, const std::vector<char>& bytes);
  void evict(int64_t m, int64_t e);
  void issue_prefetch(int64_t m, const std::vector<int32_t>& idx, int64_t n_tokens);

  MoeModel& model_;
  int64_t capacity_, n_experts_, top_k_, expert_bytes_ = 0;
  bool pathway_ = false;
  std::vector<double> next_given_top1_;       // [(M-1), E, E] P(v | e) from the calibration
  std::vector<std::vector<Slot>> slots_;      // [M][E]
  std::vector<std::vector<Param*>> params_;   // [M][3 * E]: gate, up, down of expert e
  std::vector<std::vector<uint64_t>> offsets_;  // [M][3 * E] file offsets
  int fd_ = -1;
  int64_t tick_ = 0;
  Pending pending_;
  ExpertCacheStats stats_;
};

}  // namespace moe::infer
