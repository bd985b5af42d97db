// MoeModel's incremental eval forward over a KV cache (see model.h): prefill_cache runs context
// rows through every layer and copies each layer's rotated keys and values into the cache;
// forward_cached runs new tokens whose attention reads each row's prefix from the cache.
//
// Why the results match forward() on the concatenated sequence: every block except attention
// works on one token at a time (norms, projections, router, experts, head), RoPE rotates by the
// absolute position (the same angles whichever op computes them), and the cached attention sees
// exactly the keys and values the full causal attention would see at that position. What
// differs is only fp32 summation order (GEMM shapes, the attention's split into prefix and new
// columns), i.e. rounding.
//
// The cache is separate from the activation buffers (which the next pass overwrites) and is
// allocated on the first prefill: 2 x n_layers x cap_tokens x (kv_heads * head_dim) elements.
#include "model/model_impl.h"

namespace moe {
namespace {

void ensure_cache(ModelState& m, const ModelConfig& c, Backend& be) {
  if (!m.kv.k.empty()) return;
  const int64_t kvw = c.n_kv_heads * c.resolved_head_dim();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    m.kv.k.push_back(be.empty({m.cap_tokens, kvw}, m.act));
    m.kv.v.push_back(be.empty({m.cap_tokens, kvw}, m.act));
  }
  m.kv.span_start = be.empty({m.cap_tokens}, DType::kI32);
  m.kv.span_len = be.empty({m.cap_tokens}, DType::kI32);
}

}  // namespace

void MoeModel::prefill_cache(const Batch& contexts, int64_t row_capacity) {
  Impl& m = *impl_;
  Backend& be = backend_;
  m.have_forward = false;  // the buffers are about to hold a pass without a head
  m.kv.batch = 0;          // an error below leaves no half-written cache in use
  const int64_t stride = row_capacity > 0 ? row_capacity : contexts.seq;
  MOE_CHECK(stride >= contexts.seq && stride <= cfg_.max_seq_len,
            "prefill_cache: row capacity {} must lie in [seq {}, max_seq_len {}]", stride,
            contexts.seq, cfg_.max_seq_len);
  MOE_CHECK(contexts.batch * stride <= m.cap_tokens, "prefill_cache: {} rows x capacity {} "
            "exceed the {} tokens the model was built for", contexts.batch, stride,
            m.cap_tokens);
  load_batch(m, cfg_, be, contexts, /*with_targets=*/false, "prefill_cache");
  ensure_cache(m, cfg_, be);
  const int64_t N = m.n_tokens, S = contexts.seq;
  Tensor h0 = head_rows(m.hidden[0], N);
  be.embedding_forward(h0, head_rows(m.ids, N), m.embed.compute());
  for (Layer& layer : m.layers) {
    Tensor h_out = head_rows(m.hidden[layer.index + 1], N);
    layer_forward(m, cfg_, loss_cfg_, be, layer, head_rows(m.hidden[layer.index], N), h_out,
                  /*need_grad=*/false);
    // With recomputation the layers share k and v: copy before the next layer overwrites them.
    if (stride == S) {
      Tensor kc = head_rows(m.kv.k[layer.index], N), vc = head_rows(m.kv.v[layer.index], N);
      be.copy(kc, head_rows(layer.act.k, N));
      be.copy(vc, head_rows(layer.act.v, N));
    } else {
      for (int64_t r = 0; r < contexts.batch; ++r) {
        Tensor kc = m.kv.k[layer.index].rows(r * stride, r * stride + S);
        Tensor vc = m.kv.v[layer.index].rows(r * stride, r * stride + S);
        be.copy(kc, layer.act.k.rows(r * S, r * S + S));
        be.copy(vc, layer.act.v.rows(r * S, r * S + S));
      }
    }
  }
  m.kv.batch = contexts.batch;
  m.kv.seq = contexts.seq;
  m.kv.stride = stride;
}

void MoeModel::forward_cached(const Batch& batch, const std::vector<int32_t>& ctx_row,
                              const std::vector<int32_t>& ctx_len, bool append) {
  Impl& m = *impl_;
  Backend& be = backend_;
  MOE_CHECK(m.kv.batch > 0, "forward_cached: no prefill_cache since the model was built");
  MOE_CHECK(static_cast<int64_t>(ctx_row.size()) == batch.batch &&
                static_cast<int64_t>(ctx_len.size()) == batch.batch,
            "forward_cached: {} rows need {} context rows and lengths, found {} and {}",
            batch.batch, batch.batch, ctx_row.size(), ctx_len.size());
  std::vector<int32_t> start(ctx_row.size());
  for (size_t b = 0; b < ctx_row.size(); ++b) {
    MOE_CHECK(ctx_row[b] >= 0 && ctx_row[b] < m.kv.batch, "forward_cached: row {} continues "
              "context row {}, but the last prefill_cache ran {} rows", b, ctx_row[b],
              m.kv.batch);
    const int64_t held = m.kv.stride > m.kv.seq ? m.kv.stride : m.kv.seq;
    MOE_CHECK(ctx_len[b] >= 0 && ctx_len[b] <= held, "forward_cached: row {} continues "
              "{} cached tokens, but the prefill rows hold {}", b, ctx_len[b], held);
    MOE_CHECK(!append || ctx_len[b] + batch.seq <= m.kv.stride, "forward_cached: appending {} "
              "tokens behind {} cached ones in row {} exceeds the row capacity {}", batch.seq,
              ctx_len[b], ctx_row[b], m.kv.stride);
    start[b] = static_cast<int32_t>(ctx_row[b] * m.kv.stride);
  }
  m.have_forward = false;
  load_batch(m, cfg_, be, batch, /*with_targets=*/true, "forward_cached");
  Tensor span_start = head_rows(m.kv.span_start, batch.batch);
  Tensor span_len = head_rows(m.kv.span_len, batch.batch);
  be.upload_vec(span_start, start);
  be.upload_vec(span_len, ctx_len);
  if (!append) {
    layers_forward(m, cfg_, loss_cfg_, be, /*need_grad=*/false, &m.kv);
  } else {
    // The layers one by one, each writing its new keys and values behind the row's prefix
    // (after its own attention has read the prefix, so the new tokens are not seen twice).
    const int64_t N = m.n_tokens, S = batch.seq;
    Tensor h0 = head_rows(m.hidden[0], N);
    be.embedding_forward(h0, head_rows(m.ids, N), m.embed.compute());
    for (Layer& layer : m.layers) {
      Tensor h_out = head_rows(m.hidden[layer.index + 1], N);
      layer_forward(m, cfg_, loss_cfg_, be, layer, head_rows(m.hidden[layer.index], N), h_out,
                    /*need_grad=*/false, &m.kv);
      for (int64_t b = 0; b < batch.batch; ++b) {
        const int64_t at = start[b] + ctx_len[b];
        Tensor kc = m.kv.k[layer.index].rows(at, at + S), vc = m.kv.v[layer.index].rows(at, at + S);
        be.copy(kc, layer.act.k.rows(b * S, b * S + S));
        be.copy(vc, layer.act.v.rows(b * S, b * S + S));
      }
    }
  }
  head_forward(m, cfg_, be);
  m.have_forward = true;
  m.forward_for_grad = false;
}

}  // namespace moe

namespace moe {
void MoeModel::set_expert_hook(ExpertHook hook) { impl_->expert_hook = std::move(hook); }
}  // namespace moe
