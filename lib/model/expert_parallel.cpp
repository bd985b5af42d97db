// Expert parallelism: the routed experts of one MoE layer run on the ranks that own them.
//
// Rank q of the P ranks of the expert-parallel group owns the El = E / P experts
// [q El, (q + 1) El). The dispatch plan (moe_dispatch_plan over all E experts) sorts this rank's
// token rows by expert, so the rows for rank p are one contiguous block of act.x_perm. Forward:
//   1. the per-expert row counts go to the owners (all-to-all of El counts per rank), so every
//      rank knows how many rows it receives from each rank for each of its experts;
//   2. the rows go to the owners (all-to-all with per-rank counts, rows x d elements each);
//      they arrive by sending rank, and within one rank's block sorted by local expert;
//   3. the owners run gate/up, SwiGLU and down on their experts, one grouped GEMM per sending
//      rank's block;
//   4. y and z go back source-major with the reverse all-to-all, so act.y_perm and act.z hold
//      what the local grouped GEMMs would have written, in this rank's dispatch order: the
//      weighted combine, and the sp loss of this rank's tokens, run unchanged where the tokens
//      are.
// Backward mirrors it: dy_perm (and the sp gradient w.r.t. z, computed where the tokens are) go
// to the owners, which run the experts' backward (their weight gradients accumulate there,
// summed over every rank's tokens) and send dx back for the permute backward.
//
// Per sending rank, an expert's rows and their order are those the sending rank would give its
// local grouped GEMM, and the owner adds the ranks' weight gradients in rank order, as one rank
// with gradient accumulation adds its micro-batches; what differs from that is only the order of
// the additions of gradient norms and of the all-reduce over replicas (see the tests).
#include <chrono>
#include <numeric>

#include "model/model_impl.h"

namespace moe {
namespace {

// Grows the shared scratch to `rows` rows (contents are never kept between calls).
void ensure_scratch(EpState& ep, Backend& be, DType act, int64_t rows, int64_t d, int64_t f) {
  if (rows <= ep.cap && ep.y.defined()) return;
  const int64_t cap = std::max<int64_t>({rows, 2 * ep.cap, 1});
  for (Tensor* t : {&ep.y, &ep.dy, &ep.dx, &ep.dx2}) *t = be.empty({cap, d}, act);
  for (Tensor* t : {&ep.dz, &ep.dz_sp, &ep.dgate, &ep.dup}) {
    *t = be.empty({cap, f}, act);
  }
  ep.cap = cap;
}

// Grows one layer's saved activations to `rows` rows.
void ensure_layer(EpLayer& l, Backend& be, DType act, int64_t rows, int64_t d, int64_t f) {
  if (rows <= l.cap && l.x.defined()) return;
  const int64_t cap = std::max<int64_t>({rows, 2 * l.cap, 1});
  l.x = be.empty({cap, d}, act);
  for (Tensor* t : {&l.gate, &l.up, &l.z}) *t = be.empty({cap, f}, act);
  l.cap = cap;
}

// One all-to-all of the expert group, its wall time added to ep.comm_seconds (on a CUDA
// backend that includes waiting for the compute the exchange depends on).
void exchange(EpState& ep, Tensor out, const std::vector<int64_t>& recv, const Tensor& in,
              const std::vector<int64_t>& send) {
  const auto t0 = std::chrono::steady_clock::now();
  ep.comm->all_to_all(out, recv, in, send);
  ep.comm_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<int64_t> times(const std::vector<int64_t>& rows, int64_t width) {
  std::vector<int64_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i] * width;
  return out;
}

// Step 1: the exchange plan of this layer's forward: rows to and from each rank, and per
// sending rank the offsets of its rows' local experts.
void plan_exchange(EpState& ep, const ModelConfig& c, Backend& be, DType act, Layer& layer) {
  const int P = ep.size;
  const int64_t El = ep.local_experts, E = c.n_experts;
  EpLayer& l = layer.ep;
  // Rows per expert of this rank's dispatch: block p of El counts goes to rank p.
  const std::vector<int32_t> off = be.download_vec<int32_t>(layer.act.expert_offsets);
  std::vector<int32_t> counts(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) counts[e] = off[e + 1] - off[e];
  be.upload_vec(ep.counts_send, counts);
  const std::vector<int64_t> per_rank(static_cast<size_t>(P), El);
  exchange(ep, ep.counts_recv, per_rank, ep.counts_send, per_rank);
  // recv[s * El + j]: rows rank s sends for local expert j.
  const std::vector<int32_t> recv = be.download_vec<int32_t>(ep.counts_recv);
  l.send_rows.assign(static_cast<size_t>(P), 0);
  l.recv_rows.assign(static_cast<size_t>(P), 0);
  std::vector<int32_t> offsets(static_cast<size_t>(P * (El + 1)), 0);
  for (int p = 0; p < P; ++p) {
    for (int64_t j = 0; j < El; ++j) {
      l.send_rows[p] += counts[p * El + j];
      l.recv_rows[p] += recv[p * El + j];
      offsets[p * (El + 1) + j + 1] = offsets[p * (El + 1) + j] + recv[p * El + j];
    }
  }
  l.recv_total = std::accumulate(l.recv_rows.begin(), l.recv_rows.end(), int64_t{0});
  ensure_layer(l, be, act, l.recv_total, c.d_model, c.expert_ffn_dim);
  if (!l.offsets.defined()) l.offsets = be.empty({P * (El + 1)}, DType::kI32);
  be.upload_vec(l.offsets, offsets);
}

// The rows rank s sent, [begin, begin + n) of the received ones, and their expert offsets.
struct Block {
  int64_t begin = 0, n = 0;
  Tensor offsets;
};

std::vector<Block> blocks(const EpState& ep, const EpLayer& l) {
  std::vector<Block> out;
  int64_t begin = 0;
  for (int s = 0; s < ep.size; ++s) {
    Block b;
    b.begin = begin;
    b.n = l.recv_rows[s];
    b.offsets = l.offsets.slice_flat(s * (ep.local_experts + 1), {ep.local_experts + 1});
    begin += b.n;
    if (b.n > 0) out.push_back(b);
  }
  return out;
}

Tensor block_rows(const Tensor& t, const Block& b) { return t.rows(b.begin, b.begin + b.n); }

}  // namespace

void ep_experts_forward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer) {
  EpState& ep = m.ep;
  EpLayer& l = layer.ep;
  LayerActs& a = layer.act;
  const int64_t R = m.dispatched_rows(c), d = c.d_model, f = c.expert_ffn_dim;
  plan_exchange(ep, c, be, m.act, layer);
  const int64_t rows = l.recv_total;
  ensure_scratch(ep, be, m.act, rows, d, f);

  // 2. Rows to the owners.
  Tensor x = head_rows(l.x, rows);
  exchange(ep, x, times(l.recv_rows, d), head_rows(a.x_perm, R), times(l.send_rows, d));
  // 3. This rank's experts, one grouped GEMM per sending rank: the rows of one (rank, expert)
  // pair are computed exactly as that rank would compute them locally, and the weight
  // gradients add up rank by rank (as gradient accumulation adds micro-batches).
  for (const Block& b : blocks(ep, l)) {
    Tensor xb = block_rows(l.x, b), gate = block_rows(l.gate, b), up = block_rows(l.up, b);
    Tensor z = block_rows(l.z, b), y = block_rows(ep.y, b);
    be.grouped_matmul_forward(gate, xb, layer.gate_w.compute(), b.offsets);
    be.grouped_matmul_forward(up, xb, layer.up_w.compute(), b.offsets);
    be.swiglu_forward(z, gate, up);
    be.grouped_matmul_forward(y, z, layer.down_w.compute(), b.offsets);
  }
  // 4. Back where the tokens are.
  Tensor y_perm = head_rows(a.y_perm, R), z_perm = head_rows(a.z, R);
  exchange(ep, y_perm, times(l.send_rows, d), head_rows(ep.y, rows),
                      times(l.recv_rows, d));
  exchange(ep, z_perm, times(l.send_rows, f), head_rows(l.z, rows),
                      times(l.recv_rows, f));
}

void ep_experts_backward(ModelState& m, const ModelConfig& c, Backend& be, Layer& layer,
                         float sp_coef) {
  EpState& ep = m.ep;
  EpLayer& l = layer.ep;
  LayerActs& a = layer.act;
  GradScratch& g = m.g;
  const int64_t R = m.dispatched_rows(c), N = m.rows(), d = c.d_model, f = c.expert_ffn_dim;
  const int64_t rows = l.recv_total;
  ensure_scratch(ep, be, m.act, rows, d, f);
  const bool sp = sp_coef != 0.0f;

  // dy (and the sp gradient w.r.t. z, which needs all k rows of a token: it is taken here, where
  // the tokens are) to the owners.
  exchange(ep, ep.dy, times(l.recv_rows, d), head_rows(g.dy_perm, R),
                      times(l.send_rows, d));
  if (sp) {
    Tensor dz_sp = head_rows(g.dz_e, R);
    be.fill(dz_sp, 0.0);
    be.sp_loss_backward(dz_sp, head_rows(a.z, R), head_rows(a.token_row, N), sp_coef);
    exchange(ep, ep.dz_sp, times(l.recv_rows, f), dz_sp, times(l.send_rows, f));
  }
  for (const Block& b : blocks(ep, l)) {
    const Tensor x = block_rows(l.x, b), gate = block_rows(l.gate, b);
    const Tensor up = block_rows(l.up, b), z = block_rows(l.z, b);
    const Tensor dy = block_rows(ep.dy, b);
    Tensor dz = block_rows(ep.dz, b), dgate = block_rows(ep.dgate, b);
    Tensor dup = block_rows(ep.dup, b), dx = block_rows(ep.dx, b), dx2 = block_rows(ep.dx2, b);
    be.grouped_matmul_backward(dz, layer.down_w.grad, dy, z, layer.down_w.compute(), b.offsets);
    if (sp) be.add(dz, dz, block_rows(ep.dz_sp, b));
    be.swiglu_backward(dgate, dup, dz, gate, up);
    be.grouped_matmul_backward(dx, layer.gate_w.grad, dgate, x, layer.gate_w.compute(),
                               b.offsets);
    be.grouped_matmul_backward(dx2, layer.up_w.grad, dup, x, layer.up_w.compute(), b.offsets);
    be.add(dx, dx, dx2);
  }
  Tensor dx_perm = head_rows(g.dx_perm, R);
  exchange(ep, dx_perm, times(l.send_rows, d), head_rows(ep.dx, rows),
                      times(l.recv_rows, d));
}

}  // namespace moe
