// Token-resident expert parallelism (see resident_ep.h for the protocol).
//
// Tokens are named by a global id: rank h's batch holds ids [offset[h], offset[h] + N_h), row
// major, so a token's position and the first id of its sequence follow from the id. A rank keeps
// the ids of its resident tokens (`ids`, host) beside their hidden states (`h`, one row each).
// Index work (who goes where) is done on the host; every row movement within a rank is a
// moe_permute (a row gather) and every movement between ranks an all-to-all.
#include "infer/resident_ep.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>

#include "backend/backend.h"
#include "core/error.h"

namespace moe::infer {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct LayerWeights {
  bool is_moe = false;
  int64_t moe_index = -1;
  Tensor attn_gain, wq, wk, wv, wo, ffn_gain;
  Tensor gate, up, down;                     // dense FFN, or this rank's experts [El, ., .]
  Tensor router, bias;                       // bias undefined unless balance = bias
  Tensor shared_gate, shared_up, shared_down;  // undefined without shared experts
};

}  // namespace

struct ResidentExpertParallel::Impl {
  MoeModel& model;
  Backend& be;
  Communicator& comm;
  const ModelConfig& c;
  const routing::Placement& place;
  ResidentEpStats& stats;
  int P = 1, rank = 0;
  int64_t E = 0, k = 0, El = 0, d = 0, hd = 0, qw = 0, kvw = 0;
  float eps = 0, theta = 0;
  bool use_bias = false;
  std::vector<int32_t> local_slot;  // [M * E]: an expert's index among its rank's experts
  std::vector<LayerWeights> layers;
  Tensor embed, final_gain, lm_head;

  // The current forward: every rank's batch shape, and this rank's resident tokens.
  std::vector<int64_t> offset, seq_of;  // per rank: first global id, sequence length
  int64_t total = 0;
  std::vector<int32_t> ids;  // resident global ids
  Tensor h;                  // [ids.size(), d] their hidden states

  Impl(MoeModel& m, Communicator& cm, const routing::Placement& p, ResidentEpStats& s)
      : model(m), be(m.backend()), comm(cm), c(m.config()), place(p), stats(s) {}

  // A tensor of `rows` rows (storage for at least one, so a rank with no rows still has a
  // buffer to hand to the collectives).
  Tensor buf(int64_t rows, int64_t width, DType dt = DType::kF32) {
    return be.empty({std::max<int64_t>(rows, 1), width}, dt).rows(0, rows);
  }
  Tensor vec_i32(const std::vector<int32_t>& v) {
    Tensor t = be.empty({std::max<int64_t>(static_cast<int64_t>(v.size()), 1)}, DType::kI32)
                   .rows(0, static_cast<int64_t>(v.size()));
    if (!v.empty()) be.upload_vec(t, v);
    return t;
  }
  Tensor weight(const std::string& name) { return model.param(name).value; }

  void setup() {
    P = comm.size();
    rank = comm.rank();
    E = c.n_experts;
    k = c.top_k;
    d = c.d_model;
    hd = c.resolved_head_dim();
    qw = c.n_heads * hd;
    kvw = c.n_kv_heads * hd;
    eps = static_cast<float>(c.norm_eps);
    theta = static_cast<float>(c.rope_theta);
    use_bias = model.loss_config().balance == "bias";
    MOE_USAGE_CHECK(model.compute_dtype() == DType::kF32 && be.device() == Device::kCpu,
                    "expert-parallel serving runs f32 on CPU ranks (MPI), found {} on {}",
                    dtype_name(model.compute_dtype()), be.name());
    const int64_t M = c.n_layers - c.dense_layers;
    MOE_USAGE_CHECK(M > 0, "expert-parallel serving needs MoE layers; this model has none");
    MOE_USAGE_CHECK(place.devices == P && place.n_layers == M && place.n_experts == E,
                    "placement is for {} devices, {} MoE layers, {} experts; the run has {} "
                    "ranks and the model {} MoE layers, {} experts", place.devices,
                    place.n_layers, place.n_experts, P, M, E);
    routing::check_balanced(place);
    El = E / P;
    local_slot.assign(static_cast<size_t>(M * E), 0);
    for (int64_t m = 0; m < M; ++m) {
      std::vector<int32_t> next(static_cast<size_t>(P), 0);
      for (int64_t e = 0; e < E; ++e) local_slot[m * E + e] = next[place.at(m, e)]++;
    }
    embed = weight("model.embed_tokens.weight");
    final_gain = weight("model.norm.weight");
    lm_head = c.tie_embeddings ? embed : weight("lm_head.weight");
    const int64_t f = c.expert_ffn_dim;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LayerWeights w;
      w.attn_gain = weight(p + "input_layernorm.weight");
      w.wq = weight(p + "self_attn.q_proj.weight");
      w.wk = weight(p + "self_attn.k_proj.weight");
      w.wv = weight(p + "self_attn.v_proj.weight");
      w.wo = weight(p + "self_attn.o_proj.weight");
      w.ffn_gain = weight(p + "post_attention_layernorm.weight");
      w.is_moe = l >= c.dense_layers;
      if (!w.is_moe) {
        w.gate = weight(p + "mlp.gate_proj.weight");
        w.up = weight(p + "mlp.up_proj.weight");
        w.down = weight(p + "mlp.down_proj.weight");
      } else {
        w.moe_index = l - c.dense_layers;
        w.router = weight(p + "mlp.gate.weight");
        if (use_bias) w.bias = weight(p + "mlp.gate.e_score_correction_bias");
        // This rank's experts, in expert order: slot local_slot[e] of [El, ., .].
        w.gate = be.empty({El, f, d}, DType::kF32);
        w.up = be.empty({El, f, d}, DType::kF32);
        w.down = be.empty({El, d, f}, DType::kF32);
        for (int64_t e = 0; e < E; ++e) {
          if (place.at(w.moe_index, e) != rank) continue;
          const int64_t j = local_slot[w.moe_index * E + e];
          const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
          Tensor g = w.gate.slice_flat(j * f * d, {f, d}), u = w.up.slice_flat(j * f * d, {f, d});
          Tensor dn = w.down.slice_flat(j * d * f, {d, f});
          be.copy(g, weight(ep + "gate_proj.weight"));
          be.copy(u, weight(ep + "up_proj.weight"));
          be.copy(dn, weight(ep + "down_proj.weight"));
        }
        if (c.n_shared_experts > 0) {
          w.shared_gate = weight(p + "mlp.shared_experts.gate_proj.weight");
          w.shared_up = weight(p + "mlp.shared_experts.up_proj.weight");
          w.shared_down = weight(p + "mlp.shared_experts.down_proj.weight");
        }
      }
      layers.push_back(w);
    }
  }

  // One all-to-all, timed; `bytes` (if given) adds what this rank sends to other ranks.
  void exchange(Tensor out, const std::vector<int64_t>& recv, const Tensor& in,
                const std::vector<int64_t>& send, int64_t* bytes) {
    const auto t0 = Clock::now();
    comm.all_to_all(out, recv, in, send);
    stats.comm_seconds += since(t0);
    if (bytes == nullptr) return;
    for (int q = 0; q < P; ++q) {
      if (q != rank) *bytes += send[q] * static_cast<int64_t>(dtype_size(in.dtype()));
    }
  }

  // Moves resident rows to the ranks `dest` names (stable within a destination); `h` and `ids`
  // become what this rank receives, in sending-rank order; *bytes adds what this rank sent.
  void move_tokens(const std::vector<int32_t>& dest, int64_t* bytes) {
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return dest[a] < dest[b]; });
    std::vector<int32_t> send_n(static_cast<size_t>(P), 0), sorted_ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      send_n[dest[order[i]]]++;
      sorted_ids[i] = ids[order[i]];
    }
    Tensor sorted = buf(n, d);
    if (n > 0) be.moe_permute(sorted, h, vec_i32(order));
    // Row counts first (one per rank pair), then the rows and their ids.
    Tensor cs = vec_i32(send_n), cr = buf(P, 1, DType::kI32).reshape({P});
    const std::vector<int64_t> ones(static_cast<size_t>(P), 1);
    exchange(cr, ones, cs, ones, bytes);
    const std::vector<int32_t> recv_n = be.download_vec<int32_t>(cr);
    std::vector<int64_t> send_rows(send_n.begin(), send_n.end());
    std::vector<int64_t> recv_rows(recv_n.begin(), recv_n.end());
    const int64_t n_new = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
    Tensor h_new = buf(n_new, d), ids_new = buf(n_new, 1, DType::kI32).reshape({n_new});
    exchange(h_new, times(recv_rows, d), sorted, times(send_rows, d), bytes);
    exchange(ids_new, recv_rows, vec_i32(sorted_ids), send_rows, bytes);
    h = h_new;
    ids = n_new > 0 ? be.download_vec<int32_t>(ids_new) : std::vector<int32_t>{};
  }

  static std::vector<int64_t> times(const std::vector<int64_t>& v, int64_t w) {
    std::vector<int64_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] * w;
    return out;
  }

  int home_of(int64_t g) const {
    return static_cast<int>(std::upper_bound(offset.begin(), offset.end(), g) - offset.begin()) -
           1;
  }
  int32_t position_of(int64_t g) const {
    const int hr = home_of(g);
    return static_cast<int32_t>((g - offset[hr]) % seq_of[hr]);
  }

  // h <- h + Attn(...) Wo^T for the resident tokens (see resident_ep.h).
  void attention(const LayerWeights& w) {
    const int64_t n = static_cast<int64_t>(ids.size());
    stats.resident_token_layers += n;
    std::vector<int32_t> pos(static_cast<size_t>(n)), start(static_cast<size_t>(n));
    int32_t pos_max = 0;
    for (int64_t i = 0; i < n; ++i) {
      pos[i] = position_of(ids[i]);
      start[i] = ids[i] - pos[i];
      pos_max = std::max(pos_max, pos[i]);
    }
    const Tensor pos_t = vec_i32(pos), start_t = vec_i32(start);
    Tensor x = buf(n, d), rstd = buf(n, 1).reshape({n});
    Tensor q = buf(n, qw), kk = buf(n, kvw), v = buf(n, kvw);
    if (n > 0) {
      be.rms_norm_forward(x, rstd, h, w.attn_gain, eps);
      be.matmul_forward(q, x, w.wq, false);
      be.matmul_forward(kk, x, w.wk, false);
      be.matmul_forward(v, x, w.wv, false);
      be.rope_forward_offset(q, q, pos_t, n, 1, c.n_heads, hd, theta);
      be.rope_forward_offset(kk, kk, pos_t, n, 1, c.n_kv_heads, hd, theta);
    }
    // Every resident key and value (and id) to every rank, then into global-id order.
    Tensor k_all = buf(total, kvw), v_all = buf(total, kvw);
    Tensor ids_all = buf(total, 1, DType::kI32).reshape({total});
    {
      Tensor kin = buf(P * n, kvw), vin = buf(P * n, kvw);
      std::vector<int32_t> ids_rep;
      for (int q2 = 0; q2 < P && n > 0; ++q2) {
        Tensor kb = kin.rows(q2 * n, (q2 + 1) * n), vb = vin.rows(q2 * n, (q2 + 1) * n);
        be.copy(kb, kk);
        be.copy(vb, v);
        ids_rep.insert(ids_rep.end(), ids.begin(), ids.end());
      }
      std::vector<uint64_t> counts = comm.all_gather_host(static_cast<uint64_t>(n));
      stats.busiest_token_layers +=
          static_cast<int64_t>(*std::max_element(counts.begin(), counts.end()));
      std::vector<int64_t> recv(counts.begin(), counts.end());
      const std::vector<int64_t> send(static_cast<size_t>(P), n);
      exchange(k_all, times(recv, kvw), kin, times(send, kvw), &stats.context_bytes);
      exchange(v_all, times(recv, kvw), vin, times(send, kvw), &stats.context_bytes);
      exchange(ids_all, recv, vec_i32(ids_rep), send, &stats.context_bytes);
    }
    const std::vector<int32_t> got = be.download_vec<int32_t>(ids_all);
    std::vector<int32_t> row_of(static_cast<size_t>(total), -1);
    for (int64_t i = 0; i < total; ++i) row_of[got[i]] = static_cast<int32_t>(i);
    const Tensor row_of_t = vec_i32(row_of);
    Tensor k_ctx = buf(total, kvw), v_ctx = buf(total, kvw);
    be.moe_permute(k_ctx, k_all, row_of_t);
    be.moe_permute(v_ctx, v_all, row_of_t);
    if (n == 0) return;
    Tensor out = buf(n, qw);
    AttnDims dims;
    dims.batch = n;
    dims.seq = 1;
    dims.heads = c.n_heads;
    dims.kv_heads = c.n_kv_heads;
    dims.head_dim = hd;
    dims.cache_len_max = pos_max;
    // One query row per token: its prefix is rows start .. start + pos - 1 of the context, and
    // it attends to that and to its own key (the "new" token of the cached attention).
    be.attention_forward_cached(out, q, kk, v, k_ctx, v_ctx, start_t, pos_t, dims);
    be.matmul_forward(h, out, w.wo, /*accumulate=*/true);
  }

  void swiglu_mlp(Tensor& out, const Tensor& x, const Tensor& gw, const Tensor& uw,
                  const Tensor& dw) {
    const int64_t n = x.dim(0), width = gw.dim(0);
    Tensor g = buf(n, width), u = buf(n, width), z = buf(n, width);
    be.matmul_forward(g, x, gw, false);
    be.matmul_forward(u, x, uw, false);
    be.swiglu_forward(z, g, u);
    be.matmul_forward(out, z, dw, /*accumulate=*/true);
  }

  // Routed experts of MoE layer w for the resident tokens (normalised input x), added into h
  // with the router weights; then each token moves to its top-1 expert's rank.
  void moe(const LayerWeights& w, const Tensor& x) {
    const int64_t n = static_cast<int64_t>(ids.size()), R = n * k, mi = w.moe_index;
    const int64_t f = c.expert_ffn_dim;
    std::vector<int32_t> idx, slot_idx(static_cast<size_t>(R)), dest(static_cast<size_t>(n));
    std::vector<float> prob;
    Tensor weight = buf(n, k);
    if (n > 0) {
      Tensor logits = buf(n, E), probs = buf(n, E), sel = buf(n, k, DType::kI32);
      be.matmul_forward(logits, x, w.router, false);
      be.router_forward(probs, sel, weight, logits, w.bias, c.norm_topk_prob);
      idx = be.download_vec<int32_t>(sel);
      prob = be.download_vec<float>(probs);
    }
    // Relabel each expert as (its rank, its slot there): sorted by that, the rows for rank p
    // are one block, ordered by p's local experts.
    for (int64_t t = 0; t < n; ++t) {
      int64_t top = 0;  // the trace's slot 0: largest probability, ties to the lower expert id
      for (int64_t s = 0; s < k; ++s) {
        const int32_t e = idx[t * k + s];
        const int dev = place.at(mi, e);
        slot_idx[t * k + s] = static_cast<int32_t>(dev * El + local_slot[mi * E + e]);
        const bool cross = dev != rank;
        (mi == 0 ? stats.first_hops : stats.hops)++;
        (mi == 0 ? stats.first_crossing : stats.crossing) += cross ? 1 : 0;
        const int32_t best = idx[t * k + top];
        const float a = prob[t * E + e], b = prob[t * E + best];
        if (a > b || (a == b && e < best)) top = s;
      }
      dest[t] = place.at(mi, idx[t * k + top]);
    }
    Tensor offsets = buf(E + 1, 1, DType::kI32).reshape({E + 1});
    Tensor row_token = buf(R, 1, DType::kI32).reshape({R}), token_row = buf(n, k, DType::kI32);
    Tensor xp = buf(R, d);
    std::vector<int32_t> per_slot(static_cast<size_t>(E), 0);
    if (n > 0) {
      be.moe_dispatch_plan(offsets, row_token, token_row, vec_i32(slot_idx).reshape({n, k}), E);
      be.moe_permute(xp, x, row_token);
      const std::vector<int32_t> off = be.download_vec<int32_t>(offsets);
      for (int64_t e = 0; e < E; ++e) per_slot[e] = off[e + 1] - off[e];
    }
    // Rows per (rank, local expert) to the owners.
    Tensor counts_recv = buf(E, 1, DType::kI32).reshape({E});
    const std::vector<int64_t> blocks(static_cast<size_t>(P), El);
    exchange(counts_recv, blocks, vec_i32(per_slot), blocks, &stats.expert_bytes);
    const std::vector<int32_t> recv_counts = be.download_vec<int32_t>(counts_recv);
    std::vector<int64_t> send_rows(static_cast<size_t>(P), 0), recv_rows(static_cast<size_t>(P), 0);
    std::vector<int32_t> local_off(static_cast<size_t>(P * (El + 1)), 0);
    for (int q2 = 0; q2 < P; ++q2) {
      for (int64_t j = 0; j < El; ++j) {
        send_rows[q2] += per_slot[q2 * El + j];
        recv_rows[q2] += recv_counts[q2 * El + j];
        local_off[q2 * (El + 1) + j + 1] = local_off[q2 * (El + 1) + j] + recv_counts[q2 * El + j];
      }
    }
    const int64_t rows_in = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0});
    stats.expert_rows += rows_in;
    Tensor xr = buf(rows_in, d), yr = buf(rows_in, d);
    exchange(xr, times(recv_rows, d), xp, times(send_rows, d), &stats.expert_bytes);
    // This rank's experts, one grouped GEMM per sending rank's block.
    const Tensor local_off_t = vec_i32(local_off);
    int64_t begin = 0;
    for (int q2 = 0; q2 < P; ++q2) {
      const int64_t m = recv_rows[q2];
      if (m > 0) {
        const Tensor offs = local_off_t.slice_flat(q2 * (El + 1), {El + 1});
        Tensor xb = xr.rows(begin, begin + m), yb = yr.rows(begin, begin + m);
        Tensor g = buf(m, f), u = buf(m, f), z = buf(m, f);
        be.grouped_matmul_forward(g, xb, w.gate, offs);
        be.grouped_matmul_forward(u, xb, w.up, offs);
        be.swiglu_forward(z, g, u);
        be.grouped_matmul_forward(yb, z, w.down, offs);
      }
      begin += m;
    }
    Tensor yp = buf(R, d);
    exchange(yp, times(send_rows, d), yr, times(recv_rows, d), &stats.expert_bytes);
    if (n > 0) {
      be.moe_unpermute(h, yp, weight, token_row, /*accumulate=*/true);
      if (w.shared_gate.defined()) swiglu_mlp(h, x, w.shared_gate, w.shared_up, w.shared_down);
    }
    move_tokens(dest, &stats.migrate_bytes);
  }

  void layer(const LayerWeights& w) {
    attention(w);
    const int64_t n = static_cast<int64_t>(ids.size());
    Tensor x = buf(n, d), rstd = buf(n, 1).reshape({n});
    if (n > 0) be.rms_norm_forward(x, rstd, h, w.ffn_gain, eps);
    if (!w.is_moe) {
      if (n > 0) swiglu_mlp(h, x, w.gate, w.up, w.down);
      return;
    }
    moe(w, x);
  }
};

ResidentExpertParallel::ResidentExpertParallel(MoeModel& model, Communicator& comm,
                                               const routing::Placement& placement)
    : placement_(placement), impl_(nullptr) {
  auto impl = std::make_unique<Impl>(model, comm, placement_, stats_);
  impl->setup();
  impl_ = impl.release();
}

ResidentExpertParallel::~ResidentExpertParallel() { delete impl_; }

bool ResidentExpertParallel::forward(const Batch& batch) {
  Impl& m = *impl_;
  const auto t0 = Clock::now();
  const ModelConfig& c = m.c;
  const int64_t n_home = batch.batch * batch.seq;
  MOE_CHECK(batch.batch >= 0 && batch.seq >= 0 && (n_home == 0 || batch.seq <= c.max_seq_len),
            "expert-parallel forward: batch {} x seq {} (max_seq_len {})", batch.batch, batch.seq,
            c.max_seq_len);
  MOE_CHECK(static_cast<int64_t>(batch.inputs.size()) == n_home,
            "expert-parallel forward: batch {} x {} needs {} inputs, found {}", batch.batch,
            batch.seq, n_home, batch.inputs.size());
  for (size_t i = 0; i < batch.inputs.size(); ++i) {
    MOE_CHECK(batch.inputs[i] >= 0 && batch.inputs[i] < c.vocab_size, "expert-parallel forward: "
              "input id {} at position {} outside the vocabulary [0, {})", batch.inputs[i], i,
              c.vocab_size);
  }
  // Every rank's batch shape: global ids, positions and sequence starts follow from them.
  const std::vector<uint64_t> ns = m.comm.all_gather_host(static_cast<uint64_t>(n_home));
  const std::vector<uint64_t> seqs = m.comm.all_gather_host(static_cast<uint64_t>(batch.seq));
  m.offset.assign(static_cast<size_t>(m.P) + 1, 0);
  m.seq_of.assign(static_cast<size_t>(m.P), 1);
  for (int q = 0; q < m.P; ++q) {
    m.offset[q + 1] = m.offset[q] + static_cast<int64_t>(ns[q]);
    m.seq_of[q] = std::max<int64_t>(1, static_cast<int64_t>(seqs[q]));
  }
  m.total = m.offset[m.P];
  if (m.total == 0) return false;
  MOE_CHECK(m.total < (int64_t{1} << 31), "expert-parallel forward: {} tokens over all ranks "
            "exceed the i32 token ids", m.total);
  m.offset.pop_back();  // offset[q]: first id of rank q (upper_bound finds a token's home)
  stats_.forwards++;
  stats_.tokens += n_home;

  // Embedding of this rank's own tokens: they start at home.
  m.ids.resize(static_cast<size_t>(n_home));
  std::iota(m.ids.begin(), m.ids.end(), static_cast<int32_t>(m.offset[m.rank]));
  m.h = m.buf(n_home, m.d);
  if (n_home > 0) m.be.embedding_forward(m.h, m.vec_i32(batch.inputs), m.embed);
  for (const LayerWeights& w : m.layers) m.layer(w);

  // Home, in batch order, for the head.
  std::vector<int32_t> home(m.ids.size());
  for (size_t i = 0; i < m.ids.size(); ++i) home[i] = m.home_of(m.ids[i]);
  m.move_tokens(home, &stats_.home_bytes);
  MOE_CHECK(static_cast<int64_t>(m.ids.size()) == n_home, "expert-parallel forward: {} of this "
            "rank's {} tokens came home", m.ids.size(), n_home);
  if (n_home > 0) {
    std::vector<int32_t> row_of(static_cast<size_t>(n_home));
    for (int64_t i = 0; i < n_home; ++i) row_of[m.ids[i] - m.offset[m.rank]] = static_cast<int32_t>(i);
    Tensor h = m.buf(n_home, m.d), norm = m.buf(n_home, m.d);
    Tensor rstd = m.buf(n_home, 1).reshape({n_home}), logits = m.buf(n_home, c.vocab_size);
    m.be.moe_permute(h, m.h, m.vec_i32(row_of));
    m.be.rms_norm_forward(norm, rstd, h, m.final_gain, m.eps);
    m.be.matmul_forward(logits, norm, m.lm_head, false);
    logits_ = m.be.download_vec<float>(logits);
  } else {
    logits_.clear();
  }
  stats_.seconds += since(t0);
  return true;
}

}  // namespace moe::infer
