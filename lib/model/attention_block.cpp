// The attention half of a layer: h_mid = h_in + Attn(RoPE(q), RoPE(k), v) Wo^T with
// q, k, v = RMSNorm(h_in) W{q,k,v}^T, and its backward pass. q and k are rotated in place, so the
// saved q and k are the rotated ones the attention backward needs (RoPE is linear: its backward
// needs no input).
#include "model/model_impl.h"

namespace moe {
namespace {

AttnDims dims_of(const ModelState& m, const ModelConfig& c) {
  AttnDims d;
  d.batch = m.batch;
  d.seq = m.seq;
  d.heads = c.n_heads;
  d.kv_heads = c.n_kv_heads;
  d.head_dim = c.resolved_head_dim();
  return d;
}

// The parts of the block around the attention itself, shared by the training and the KV-cache
// forward: the input norm and the q, k, v projections (before RoPE) ...
void project_qkv(Backend& be, const ModelConfig& c, Layer& layer, const Tensor& h_in, Tensor& norm,
                 Tensor& rstd, Tensor& q, Tensor& k, Tensor& v) {
  be.rms_norm_forward(norm, rstd, h_in, layer.attn_gain.compute(), static_cast<float>(c.norm_eps));
  be.matmul_forward(q, norm, layer.wq.compute(), false);
  be.matmul_forward(k, norm, layer.wk.compute(), false);
  be.matmul_forward(v, norm, layer.wv.compute(), false);
}

// ... and the output projection onto the residual: h_mid = h_in + out Wo^T.
void project_out(Backend& be, Layer& layer, const Tensor& h_in, const Tensor& out, Tensor& h_mid) {
  be.copy(h_mid, h_in);
  be.matmul_forward(h_mid, out, layer.wo.compute(), /*accumulate=*/true);
}

}  // namespace

void attention_forward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                       const Tensor& h_in, Tensor& h_mid) {
  const int64_t N = m.rows(), hd = c.resolved_head_dim();
  const float theta = static_cast<float>(c.rope_theta);
  LayerActs& a = layer.act;
  Tensor norm = head_rows(a.attn_norm, N), rstd = head_rows(a.attn_rstd, N);
  Tensor q = head_rows(a.q, N), k = head_rows(a.k, N), v = head_rows(a.v, N);
  Tensor out = head_rows(a.attn_out, N);
  Tensor lse = a.attn_lse.slice_flat(0, {m.batch, c.n_heads, m.seq});

  project_qkv(be, c, layer, h_in, norm, rstd, q, k, v);
  be.rope_forward(q, q, m.batch, m.seq, c.n_heads, hd, theta);
  be.rope_forward(k, k, m.batch, m.seq, c.n_kv_heads, hd, theta);
  be.attention_forward(out, lse, q, k, v, dims_of(m, c));
  project_out(be, layer, h_in, out, h_mid);
}

// The same block for new tokens over the KV cache: q and k are rotated at their absolute
// positions (cache.span_len[b] + t), the new k and v stay in this layer's activation buffers,
// and the attention reads the cached prefix of each row directly from the cache.
void attention_forward_cached(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                              const Tensor& h_in, Tensor& h_mid, const KvCache& cache) {
  const int64_t N = m.rows(), hd = c.resolved_head_dim();
  const float theta = static_cast<float>(c.rope_theta);
  LayerActs& a = layer.act;
  Tensor norm = head_rows(a.attn_norm, N), rstd = head_rows(a.attn_rstd, N);
  Tensor q = head_rows(a.q, N), k = head_rows(a.k, N), v = head_rows(a.v, N);
  Tensor out = head_rows(a.attn_out, N);
  const Tensor start = head_rows(cache.span_start, m.batch);
  const Tensor len = head_rows(cache.span_len, m.batch);
  const int64_t cached_rows = cache.batch * cache.stride;
  const Tensor k_cache = head_rows(cache.k[layer.index], cached_rows);
  const Tensor v_cache = head_rows(cache.v[layer.index], cached_rows);

  project_qkv(be, c, layer, h_in, norm, rstd, q, k, v);
  be.rope_forward_offset(q, q, len, m.batch, m.seq, c.n_heads, hd, theta);
  be.rope_forward_offset(k, k, len, m.batch, m.seq, c.n_kv_heads, hd, theta);
  be.attention_forward_cached(out, q, k, v, k_cache, v_cache, start, len, dims_of(m, c));
  project_out(be, layer, h_in, out, h_mid);
}

// On entry m.g.dh holds dL/dh_mid; on exit dL/dh_in (the residual path plus the norm path).
void attention_backward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                        const Tensor& h_in) {
  const int64_t N = m.rows(), hd = c.resolved_head_dim();
  const float theta = static_cast<float>(c.rope_theta);
  LayerActs& a = layer.act;
  GradScratch& g = m.g;
  Tensor dh = head_rows(g.dh, N), dnorm = head_rows(g.dnorm, N);
  Tensor dattn = head_rows(g.dattn, N), dq = head_rows(g.dq, N);
  Tensor dk = head_rows(g.dk, N), dk_rope = head_rows(g.dk_rope, N), dv = head_rows(g.dv, N);
  const Tensor norm = head_rows(a.attn_norm, N), rstd = head_rows(a.attn_rstd, N);
  const Tensor q = head_rows(a.q, N), k = head_rows(a.k, N), v = head_rows(a.v, N);
  const Tensor out = head_rows(a.attn_out, N);
  const Tensor lse = a.attn_lse.slice_flat(0, {m.batch, c.n_heads, m.seq});

  be.matmul_backward(dattn, layer.wo.grad, dh, out, layer.wo.compute(), false);
  be.attention_backward(dq, dk, dv, dattn, q, k, v, out, lse, dims_of(m, c));
  // dattn is free again: it receives dq before the rotation.
  be.rope_backward(dattn, dq, m.batch, m.seq, c.n_heads, hd, theta);
  be.rope_backward(dk_rope, dk, m.batch, m.seq, c.n_kv_heads, hd, theta);
  be.matmul_backward(dnorm, layer.wq.grad, dattn, norm, layer.wq.compute(), false);
  be.matmul_backward(dnorm, layer.wk.grad, dk_rope, norm, layer.wk.compute(), true);
  be.matmul_backward(dnorm, layer.wv.grad, dv, norm, layer.wv.compute(), true);
  be.rms_norm_backward(dh, layer.attn_gain.grad, dnorm, h_in, layer.attn_gain.compute(), rstd,
                       /*accumulate_dx=*/true);
}

}  // namespace moe
