// The dense FFN half of a layer (l < dense_layers): h_out = h_mid + SwiGLU(RMSNorm(h_mid)), and
// its backward pass. Attention has already copied h_mid into h_out's buffer and normalised.
#include "model/model_impl.h"

namespace moe {

// Shared by the dense layers and the MoE shared experts: out += SwiGLU(x) with weights
// gate_w, up_w, down_w, saving gate/up/z.
void swiglu_mlp_forward(Backend& be, Tensor& out, const Tensor& x, const Weight& gate_w,
                        const Weight& up_w, const Weight& down_w, Tensor& gate, Tensor& up,
                        Tensor& z) {
  be.matmul_forward(gate, x, gate_w.compute(), false);
  be.matmul_forward(up, x, up_w.compute(), false);
  be.swiglu_forward(z, gate, up);
  be.matmul_forward(out, z, down_w.compute(), /*accumulate=*/true);
}

// dx (+)= dL/dx given dout; parameter grads accumulate.
void swiglu_mlp_backward(Backend& be, Tensor& dx, bool accumulate_dx, const Tensor& dout,
                         const Tensor& x, Weight& gate_w, Weight& up_w, Weight& down_w,
                         const Tensor& gate, const Tensor& up, const Tensor& z, Tensor& dgate,
                         Tensor& dup, Tensor& dz) {
  be.matmul_backward(dz, down_w.grad, dout, z, down_w.compute(), false);
  be.swiglu_backward(dgate, dup, dz, gate, up);
  be.matmul_backward(dx, gate_w.grad, dgate, x, gate_w.compute(), accumulate_dx);
  be.matmul_backward(dx, up_w.grad, dup, x, up_w.compute(), true);
}

void dense_ffn_forward(ModelState& m, Backend& be, Layer& layer, Tensor& h_out) {
  const int64_t N = m.rows();
  LayerActs& a = layer.act;
  Tensor norm = head_rows(a.ffn_norm, N);
  Tensor gate = head_rows(a.gate, N), up = head_rows(a.up, N), z = head_rows(a.z, N);
  swiglu_mlp_forward(be, h_out, norm, layer.gate_w, layer.up_w, layer.down_w, gate, up, z);
}

// On entry m.g.dh = dL/dh_out; leaves dL/d(norm output) in m.g.dnorm.
void dense_ffn_backward(ModelState& m, Backend& be, Layer& layer) {
  const int64_t N = m.rows();
  LayerActs& a = layer.act;
  GradScratch& g = m.g;
  Tensor dnorm = head_rows(g.dnorm, N);
  Tensor dgate = head_rows(g.dgate, N), dup = head_rows(g.dup, N), dz = head_rows(g.dz, N);
  swiglu_mlp_backward(be, dnorm, false, head_rows(g.dh, N), head_rows(a.ffn_norm, N),
                      layer.gate_w, layer.up_w, layer.down_w, head_rows(a.gate, N),
                      head_rows(a.up, N), head_rows(a.z, N), dgate, dup, dz);
}

}  // namespace moe
