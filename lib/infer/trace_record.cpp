// Recording routing traces from text (see trace_record.h).
#include "infer/trace_record.h"

#include <algorithm>

#include "core/error.h"
#include "data/corpus.h"

namespace moe::infer {

routing::RoutingTrace record_trace(MoeModel& model, const data::Tokenizer& tokenizer,
                                   const std::vector<std::string>& text_specs,
                                   const std::string& jsonl_field, int64_t max_tokens,
                                   int64_t rows) {
  const auto sources = data::resolve_sources(text_specs, "--text");
  const int32_t eos = tokenizer.eos_id();
  std::vector<int32_t> stream;
  data::for_each_document(sources, jsonl_field, [&](data::Document&& doc) {
    if (max_tokens > 0 && static_cast<int64_t>(stream.size()) >= max_tokens) return;
    stream.push_back(eos);
    const std::vector<int32_t> toks = tokenizer.encode(doc.text);
    stream.insert(stream.end(), toks.begin(), toks.end());
  });
  if (max_tokens > 0 && static_cast<int64_t>(stream.size()) > max_tokens) {
    stream.resize(static_cast<size_t>(max_tokens));
  }
  MOE_USAGE_CHECK(!stream.empty(), "--text: no text in the given files");
  routing::RoutingTrace trace;
  trace.fingerprint = routing::model_fingerprint(model);
  const int64_t S = model.config().max_seq_len, total = static_cast<int64_t>(stream.size());
  for (int64_t at = 0; at < total;) {
    // Up to `rows` windows; the last window of the stream may be shorter (then alone in a pass).
    Batch b;
    b.seq = std::min(S, total - at);
    while (b.batch < rows && at + b.seq <= total) {
      b.inputs.insert(b.inputs.end(), stream.begin() + at, stream.begin() + at + b.seq);
      at += b.seq;
      b.batch++;
      if (total - at < b.seq) break;
    }
    b.targets.assign(b.inputs.size(), -1);
    model.forward(b, /*need_grad=*/false);
    const std::vector<LayerRouting> routing = model.routing();
    for (int64_t r = 0; r < b.batch; ++r) trace.append_sequence(routing, r * b.seq, b.seq);
  }
  return trace;
}

}  // namespace moe::infer
