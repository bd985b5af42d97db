// moeinfer --trace: routes every token of a text through the model and records its top-k experts
// per MoE layer (routing/trace.h). The text is read as moeeval --routing reads it (documents,
// each preceded by eos, into one token stream), cut into non-overlapping windows of max_seq_len
// tokens (each window is one trace sequence) and run `rows` windows per forward pass.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "model/model.h"
#include "routing/trace.h"

namespace moe::infer {

routing::RoutingTrace record_trace(MoeModel& model, const data::Tokenizer& tokenizer,
                                   const std::vector<std::string>& text_specs,
                                   const std::string& jsonl_field, int64_t max_tokens,
                                   int64_t rows);

}  // namespace moe::infer
