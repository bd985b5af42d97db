// MoeModel::forward: embedding -> layers (attention, then dense FFN or MoE) -> final norm ->
// output head -> per-token cross-entropy, plus R_cp over the top-k masses of all MoE layers.
#include "model/model_impl.h"

namespace moe {
namespace {

void check_batch(const Batch& b, const ModelConfig& c, int64_t cap_tokens, int64_t vocab,
                 bool with_targets, const char* op) {
  MOE_CHECK(b.batch > 0 && b.seq > 0, "{}: batch {} x seq {} must be positive", op, b.batch,
            b.seq);
  MOE_CHECK(b.batch * b.seq <= cap_tokens, "{}: micro-batch {} x {} = {} tokens exceeds the "
            "{} the model was built for", op, b.batch, b.seq, b.batch * b.seq, cap_tokens);
  MOE_CHECK(b.seq <= c.max_seq_len, "{}: seq {} exceeds model.max_seq_len {}", op, b.seq,
            c.max_seq_len);
  const size_t n = static_cast<size_t>(b.batch * b.seq);
  MOE_CHECK(b.inputs.size() == n, "{}: batch {} x {} needs {} inputs, found {}", op, b.batch,
            b.seq, n, b.inputs.size());
  MOE_CHECK(!with_targets || b.targets.size() == n,
            "{}: batch {} x {} needs {} inputs and targets, found {} and {}", op, b.batch, b.seq,
            n, b.inputs.size(), b.targets.size());
  for (size_t i = 0; i < n; ++i) {
    MOE_CHECK(b.inputs[i] >= 0 && b.inputs[i] < vocab, "{}: input id {} at position {} "
              "outside the vocabulary [0, {})", op, b.inputs[i], i, vocab);
    MOE_CHECK(!with_targets || b.targets[i] < vocab, "{}: target id {} at position {} outside "
              "the vocabulary [0, {})", op, b.targets[i], i, vocab);
  }
}

}  // namespace

void layer_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                   Layer& layer, const Tensor& h_in, Tensor& h_out, bool need_grad,
                   const KvCache* cache) {
  const int64_t N = m.rows();
  Tensor h_mid = head_rows(layer.act.mid, N);
  if (cache != nullptr) {
    attention_forward_cached(m, c, be, layer, h_in, h_mid, *cache);
  } else {
    attention_forward(m, c, be, layer, h_in, h_mid);
  }
  Tensor norm = head_rows(layer.act.ffn_norm, N), rstd = head_rows(layer.act.ffn_rstd, N);
  be.rms_norm_forward(norm, rstd, h_mid, layer.ffn_gain.compute(),
                      static_cast<float>(c.norm_eps));
  be.copy(h_out, h_mid);
  if (layer.is_moe) {
    moe_forward(m, c, lc, be, layer, h_out, need_grad);
  } else {
    dense_ffn_forward(m, be, layer, h_out);
  }
}

void load_batch(ModelState& m, const ModelConfig& c, Backend& be, const Batch& batch,
                bool with_targets, const char* op) {
  check_batch(batch, c, m.cap_tokens, m.vocab, with_targets, op);
  m.batch = batch.batch;
  m.seq = batch.seq;
  m.n_tokens = batch.batch * batch.seq;
  m.n_valid = 0;
  Tensor ids = head_rows(m.ids, m.n_tokens);
  be.upload_vec(ids, batch.inputs);
  if (!with_targets) return;
  for (int32_t t : batch.targets) m.n_valid += t >= 0 ? 1 : 0;
  Tensor targets = head_rows(m.targets, m.n_tokens);
  be.upload_vec(targets, batch.targets);
}

void layers_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                    bool need_grad, const KvCache* cache) {
  const int64_t N = m.n_tokens;
  Tensor h0 = head_rows(m.hidden[0], N);
  be.embedding_forward(h0, head_rows(m.ids, N), m.embed.compute());
  for (Layer& layer : m.layers) {
    Tensor h_out = head_rows(m.hidden[layer.index + 1], N);
    layer_forward(m, c, lc, be, layer, head_rows(m.hidden[layer.index], N), h_out, need_grad,
                  cache);
  }
}

void head_forward(ModelState& m, const ModelConfig& c, Backend& be) {
  const int64_t N = m.n_tokens;
  if (m.n_moe_layers > 0) {
    be.cp_loss_forward(m.cp_value, m.masses.slice_flat(0, {m.n_moe_layers, N}));
  }
  Tensor h_last = head_rows(m.hidden[c.n_layers], N);
  Tensor fnorm = head_rows(m.final_norm, N), frstd = head_rows(m.final_rstd, N);
  Tensor logits = head_rows(m.logits, N);
  be.rms_norm_forward(fnorm, frstd, h_last, m.final_gain.compute(),
                      static_cast<float>(c.norm_eps));
  be.matmul_forward(logits, fnorm, m.lm_head.compute(), false);
  Tensor nll = head_rows(m.token_nll, N), lse = head_rows(m.ce_lse, N);
  be.cross_entropy_forward(nll, lse, logits, head_rows(m.targets, N));
}

void MoeModel::forward(const Batch& batch, bool need_grad) {
  Impl& m = *impl_;
  load_batch(m, cfg_, backend_, batch, /*with_targets=*/true, "forward");
  layers_forward(m, cfg_, loss_cfg_, backend_, need_grad, nullptr);
  head_forward(m, cfg_, backend_);
  m.have_forward = true;
  m.forward_for_grad = need_grad;
}

}  // namespace moe
