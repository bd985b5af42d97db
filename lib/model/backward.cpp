// MoeModel::backward: the exact reverse of forward for
//   loss_scale * (L_lm + sum over ENABLED aux losses of coef * loss),
// accumulating into every Param::grad. L_lm is the mean over the valid targets, so the
// cross-entropy gradient is scaled by loss_scale / n_valid. R_cp's gradient w.r.t. the top-k
// masses of all layers is computed first; each MoE layer then adds its row into dprobs.
// With recomputation each layer's forward is re-run (bitwise identically) before its backward.
#include "model/model_impl.h"

namespace moe {

void MoeModel::backward(float loss_scale) {
  Impl& m = *impl_;
  Backend& be = backend_;
  const ModelConfig& c = cfg_;
  MOE_CHECK(m.have_forward && m.forward_for_grad,
            "backward() needs a preceding forward(batch, need_grad = true)");
  const int64_t N = m.n_tokens;
  GradScratch& g = m.g;
  Tensor dh = head_rows(g.dh, N), dnorm = head_rows(g.dnorm, N);

  // Head: cross-entropy -> output projection -> final norm (overwrites dh).
  const float ce_scale = m.n_valid > 0 ? loss_scale / static_cast<float>(m.n_valid) : 0.0f;
  Tensor dlogits = head_rows(g.dlogits, N), dfinal = head_rows(g.dfinal, N);
  be.cross_entropy_backward(dlogits, head_rows(m.logits, N), head_rows(m.ce_lse, N),
                            head_rows(m.targets, N), ce_scale);
  be.matmul_backward(dfinal, m.lm_head.grad, dlogits, head_rows(m.final_norm, N),
                     m.lm_head.compute(), false);
  be.rms_norm_backward(dh, m.final_gain.grad, dfinal, head_rows(m.hidden[c.n_layers], N),
                       m.final_gain.compute(), head_rows(m.final_rstd, N), false);
  if (backward_hook_) backward_hook_(c.n_layers);

  if (m.n_moe_layers > 0 && loss_cfg_.has("cp")) {
    Tensor dmasses = g.dmasses.slice_flat(0, {m.n_moe_layers, N});
    be.cp_loss_backward(dmasses, m.masses.slice_flat(0, {m.n_moe_layers, N}),
                        static_cast<float>(loss_cfg_.cp_coef) * loss_scale);
  }

  for (auto it = m.layers.rbegin(); it != m.layers.rend(); ++it) {
    Layer& layer = *it;
    if (m.recompute && layer.index != c.n_layers - 1) {
      // The shared buffers hold a later layer's activations: re-run this layer's forward from
      // its saved input (need_grad = false: the expert loads were counted in forward()).
      Tensor scratch_out = head_rows(m.recompute_out, N);
      layer_forward(m, c, loss_cfg_, be, layer, head_rows(m.hidden[layer.index], N), scratch_out,
                    /*need_grad=*/false);
    }
    // dh = dL/dh_out. FFN block -> dnorm, then the norm adds its path into dh (= dL/dh_mid).
    if (layer.is_moe) {
      moe_backward(m, c, loss_cfg_, be, layer, loss_scale);
    } else {
      dense_ffn_backward(m, be, layer);
    }
    be.rms_norm_backward(dh, layer.ffn_gain.grad, dnorm, head_rows(layer.act.mid, N),
                         layer.ffn_gain.compute(), head_rows(layer.act.ffn_rstd, N),
                         /*accumulate_dx=*/true);
    attention_backward(m, c, be, layer, head_rows(m.hidden[layer.index], N));
    if (backward_hook_) backward_hook_(layer.index);
  }
  be.embedding_backward(m.embed.grad, dh, head_rows(m.ids, N));
  if (backward_hook_) backward_hook_(-1);
}

}  // namespace moe
