// Routing traces: for every token of a text, the top-k experts of every MoE layer, written by
// `moeinfer --trace OUT` and read by moeeval (--routing-trace, pathway statistics) and by
// moeinfer's placement and prefetch modes (their calibration input).
//
// File format (".moetrace", all integers little-endian):
//   bytes 0-7   magic "MOETRACE"
//   u32         version (1)
//   u32         M, the number of MoE layers
//   u32         E, routed experts per layer
//   u32         k, experts selected per token and layer
//   u64         fingerprint of the model (model_fingerprint below)
//   u64         S, the number of sequences;  u64 T, the number of tokens
//   u32 x M     the transformer layer index of each MoE layer
//   u64 x S     tokens per sequence (they sum to T)
//   u16 x T*M*k the experts, token-major, then layer, then slot; slot 0 is the token's top-1
//               expert (largest router probability among the selected, ties to the lower id),
//               the others follow in the router's order
// 2 bytes per (token, layer, slot): 100k tokens of a 4-layer top-2 model take 1.6 MB.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace moe::routing {

struct RoutingTrace {
  uint64_t fingerprint = 0;
  int64_t n_experts = 0, top_k = 0;
  std::vector<int32_t> layers;     // [M] transformer layer indices
  std::vector<int64_t> seq_lens;   // [S]
  std::vector<uint16_t> experts;   // [T, M, k]

  int64_t n_moe_layers() const { return static_cast<int64_t>(layers.size()); }
  int64_t n_tokens() const;
  uint16_t expert(int64_t token, int64_t layer, int64_t slot) const {
    return experts[static_cast<size_t>((token * n_moe_layers() + layer) * top_k + slot)];
  }
  // Appends tokens [begin, begin + count) of one forward pass as one sequence (MoeModel::routing(),
  // whose probabilities pick the top-1 slot). The first call fixes M, E and k.
  void append_sequence(const std::vector<LayerRouting>& routing, int64_t begin, int64_t count);
};

// FNV-1a over the model's shape (arch, vocabulary, widths, depth, heads, E, k, shared experts,
// dense layers) and the router weights of every MoE layer: two checkpoints differ unless they
// route identically.
uint64_t model_fingerprint(MoeModel& model);

void write_trace(const std::string& path, const RoutingTrace& trace);  // atomic (tmp + rename)
// Usage errors (exit 2) name the file and what is wrong: not a trace, a version, a truncated or
// inconsistent file, an expert id out of range.
RoutingTrace read_trace(const std::string& path);
// Usage error (exit 2) unless the trace was recorded on a model with this fingerprint.
void check_trace_model(const RoutingTrace& trace, uint64_t fingerprint, const std::string& path);

// The trace as LayerRouting passes for RoutingAccumulator (selections only: probs empty).
std::vector<LayerRouting> trace_as_routing(const RoutingTrace& trace);

}  // namespace moe::routing
