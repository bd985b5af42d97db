// The MoE half of a layer and its per-layer losses:
//   router logits r = m Wr^T in f32 -> softmax s and top-k A (with the balancing bias when
//   balance = bias) -> stable counting-sort dispatch -> grouped gate/up GEMMs -> SwiGLU z ->
//   grouped down GEMM -> weighted combine into the residual; shared experts as one wide dense
//   SwiGLU (S experts concatenated) added to the residual.
//   Losses of this layer: L_lb, L_z (router logits), R_sp (on the routed z, dispatch order) and
//   the top-k mass m_t (row moe_index of the [M, N] masses that R_cp reads after all layers).
// Every loss is computed in forward (so metrics see them all); backward applies only the ENABLED
// ones with their coefficients. The top-k sets are constants in backward.
// With expert parallelism the grouped GEMMs run on the ranks that own the experts
// (expert_parallel.cpp); routing, dispatch order, shared experts and every loss stay on the rank
// that holds the tokens, computed from its own tokens.
#include "model/model_impl.h"

namespace moe {

void moe_forward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                 Layer& layer, Tensor& h_out, bool need_grad) {
  const int64_t N = m.rows(), R = m.dispatched_rows(c), mi = layer.moe_index;
  LayerActs& a = layer.act;
  Tensor norm = head_rows(a.ffn_norm, N);
  Tensor logits = head_rows(a.router_logits, N), probs = head_rows(a.probs, N);
  Tensor idx = head_rows(a.topk_idx, N), weight = head_rows(a.topk_weight, N);
  Tensor row_token = head_rows(a.row_token, R), token_row = head_rows(a.token_row, N);
  Tensor x_perm = head_rows(a.x_perm, R), y_perm = head_rows(a.y_perm, R);
  Tensor gate = head_rows(a.gate, R), up = head_rows(a.up, R), z = head_rows(a.z, R);

  // Router in f32: bf16 activations are widened first; the router weight is f32 master.
  Tensor router_in = norm;
  if (a.router_in.defined()) {
    router_in = head_rows(a.router_in, N);
    be.convert(router_in, norm);
  }
  be.matmul_forward(logits, router_in, layer.router.value, false);
  const bool bias = lc.balance == "bias";
  be.router_forward(probs, idx, weight, logits, bias ? layer.balance_bias : Tensor(),
                    c.norm_topk_prob);
  if (bias && need_grad) be.expert_load_accumulate(layer.expert_load, idx);
  // Inference (expert offload): the hook makes the selected experts' weights resident before the
  // grouped GEMMs read them.
  if (m.expert_hook) m.expert_hook(mi, idx);

  be.moe_dispatch_plan(a.expert_offsets, row_token, token_row, idx, c.n_experts);
  be.moe_permute(x_perm, norm, row_token);
  if (m.ep.comm != nullptr) {
    ep_experts_forward(m, c, be, layer);  // the owners of the experts run them
  } else {
    be.grouped_matmul_forward(gate, x_perm, layer.gate_w.compute(), a.expert_offsets);
    be.grouped_matmul_forward(up, x_perm, layer.up_w.compute(), a.expert_offsets);
    be.swiglu_forward(z, gate, up);
    be.grouped_matmul_forward(y_perm, z, layer.down_w.compute(), a.expert_offsets);
  }
  be.moe_unpermute(h_out, y_perm, weight, token_row, /*accumulate=*/true);

  if (layer.shared_gate_w.value.defined()) {
    Tensor sg = head_rows(a.shared_gate, N), su = head_rows(a.shared_up, N);
    Tensor sz = head_rows(a.shared_z, N);
    swiglu_mlp_forward(be, h_out, norm, layer.shared_gate_w, layer.shared_up_w,
                       layer.shared_down_w, sg, su, sz);
  }

  Tensor lb = m.lb_values.slice_flat(mi, {1}), zl = m.z_values.slice_flat(mi, {1});
  Tensor sp = m.sp_values.slice_flat(mi, {1});
  Tensor mass = flat_row(m.masses, mi, N);
  be.lb_loss_forward(lb, probs, idx);
  be.z_loss_forward(zl, logits);
  be.sp_loss_forward(sp, z, token_row);
  be.topk_mass_forward(mass, probs, idx);
}

// On entry m.g.dh = dL/dh_out (and, with cp enabled, m.g.dmasses holds dR_cp/dmasses scaled);
// on exit m.g.dnorm = dL/d(ffn_norm).
void moe_backward(ModelState& m, const ModelConfig& c, const LossConfig& lc, Backend& be,
                  Layer& layer, float loss_scale) {
  const int64_t N = m.rows(), R = m.dispatched_rows(c), mi = layer.moe_index;
  LayerActs& a = layer.act;
  GradScratch& g = m.g;
  const Tensor norm = head_rows(a.ffn_norm, N);
  const Tensor logits = head_rows(a.router_logits, N), probs = head_rows(a.probs, N);
  const Tensor idx = head_rows(a.topk_idx, N), weight = head_rows(a.topk_weight, N);
  const Tensor token_row = head_rows(a.token_row, N);
  const Tensor x_perm = head_rows(a.x_perm, R), y_perm = head_rows(a.y_perm, R);
  const Tensor gate = head_rows(a.gate, R), up = head_rows(a.up, R), z = head_rows(a.z, R);
  Tensor dh = head_rows(g.dh, N), dnorm = head_rows(g.dnorm, N);
  Tensor dy_perm = head_rows(g.dy_perm, R), dz = head_rows(g.dz_e, R);
  Tensor dgate = head_rows(g.dgate_e, R), dup = head_rows(g.dup_e, R);
  Tensor dx_perm = head_rows(g.dx_perm, R), dx_perm2 = head_rows(g.dx_perm2, R);
  Tensor dweight = head_rows(g.dweight, N), dprobs = head_rows(g.dprobs, N);
  Tensor drouter = head_rows(g.drouter, N);

  // Routed experts, back to the permuted input.
  be.moe_unpermute_backward(dy_perm, dweight, dh, y_perm, weight, token_row);
  const float sp_coef = lc.has("sp") ? static_cast<float>(lc.sp_coef) * loss_scale : 0.0f;
  if (m.ep.comm != nullptr) {
    ep_experts_backward(m, c, be, layer, sp_coef);
  } else {
    be.grouped_matmul_backward(dz, layer.down_w.grad, dy_perm, z, layer.down_w.compute(),
                               a.expert_offsets);
    if (lc.has("sp")) be.sp_loss_backward(dz, z, token_row, sp_coef);
    be.swiglu_backward(dgate, dup, dz, gate, up);
    be.grouped_matmul_backward(dx_perm, layer.gate_w.grad, dgate, x_perm,
                               layer.gate_w.compute(), a.expert_offsets);
    be.grouped_matmul_backward(dx_perm2, layer.up_w.grad, dup, x_perm, layer.up_w.compute(),
                               a.expert_offsets);
    be.add(dx_perm, dx_perm, dx_perm2);
  }
  be.moe_permute_backward(dnorm, dx_perm, token_row);

  if (layer.shared_gate_w.value.defined()) {
    Tensor dsg = head_rows(g.dshared_gate, N), dsu = head_rows(g.dshared_up, N);
    Tensor dsz = head_rows(g.dshared_z, N);
    swiglu_mlp_backward(be, dnorm, true, dh, norm, layer.shared_gate_w, layer.shared_up_w,
                        layer.shared_down_w, head_rows(a.shared_gate, N),
                        head_rows(a.shared_up, N), head_rows(a.shared_z, N), dsg, dsu, dsz);
  }

  // Router: losses on the probabilities, the gate-weight path, then the z-loss on the logits.
  const bool lb = lc.has("lb"), cp = lc.has("cp");
  if (lb || cp) {
    be.fill(dprobs, 0.0);
    if (lb) be.lb_loss_backward(dprobs, probs, idx, static_cast<float>(lc.lb_coef) * loss_scale);
    if (cp) be.topk_mass_backward(dprobs, flat_row(g.dmasses, mi, N), idx);
  }
  be.router_backward(drouter, (lb || cp) ? dprobs : Tensor(), dweight, probs, idx,
                     c.norm_topk_prob);
  if (lc.has("z")) {
    be.z_loss_backward(drouter, logits, static_cast<float>(lc.z_coef) * loss_scale);
  }
  if (a.router_in.defined()) {  // bf16: the router path runs in f32, then joins dnorm
    Tensor drouter_in = head_rows(g.drouter_in, N), tmp = head_rows(g.dnorm_tmp, N);
    be.matmul_backward(drouter_in, layer.router.grad, drouter, head_rows(a.router_in, N),
                       layer.router.value, false);
    be.convert(tmp, drouter_in);
    be.add(dnorm, dnorm, tmp);
  } else {
    be.matmul_backward(dnorm, layer.router.grad, drouter, norm, layer.router.value, true);
  }
}

}  // namespace moe
