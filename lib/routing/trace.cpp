// Routing traces: recording, the binary format and reading it back (see trace.h).
#include "routing/trace.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "data/atomic_file.h"

namespace moe::routing {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr uint32_t kVersion = 1;

template <typename T> void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the formats are little-endian; so are the supported hosts
  out.append(b, sizeof(T));
}

struct Reader {
  const std::string& bytes;
  const std::string& path;
  size_t at = 0;
  template <typename T> T get(const char* what) {
    MOE_USAGE_CHECK(at + sizeof(T) <= bytes.size(), "trace {}: truncated at byte {} (reading {})",
                    path, at, what);
    T v;
    std::memcpy(&v, bytes.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
};

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

int64_t RoutingTrace::n_tokens() const {
  int64_t t = 0;
  for (int64_t n : seq_lens) t += n;
  return t;
}

void RoutingTrace::append_sequence(const std::vector<LayerRouting>& routing, int64_t begin,
                                   int64_t n_tokens) {
  MOE_CHECK(!routing.empty(), "trace: the model has no MoE layer");
  if (layers.empty()) {
    n_experts = routing[0].n_experts;
    top_k = routing[0].top_k;
    for (const auto& r : routing) layers.push_back(static_cast<int32_t>(r.layer));
  }
  MOE_CHECK(static_cast<int64_t>(routing.size()) == n_moe_layers(), "trace: {} MoE layers, "
            "the trace has {}", routing.size(), n_moe_layers());
  const int64_t M = n_moe_layers(), k = top_k, E = n_experts;
  for (const auto& r : routing) {
    MOE_CHECK(r.n_experts == E && r.top_k == k && begin >= 0 && r.n_tokens >= begin + n_tokens,
              "trace: layer {} routes {} tokens over E={} k={}, expected >= {} over E={} k={}",
              r.layer, r.n_tokens, r.n_experts, r.top_k, begin + n_tokens, E, k);
  }
  for (int64_t t = begin; t < begin + n_tokens; ++t) {
    for (int64_t m = 0; m < M; ++m) {
      const LayerRouting& r = routing[m];
      const int32_t* sel = &r.topk_idx[t * k];
      const float* s = &r.probs[t * E];
      int64_t best = 0;
      for (int64_t j = 1; j < k; ++j) {
        if (s[sel[j]] > s[sel[best]] || (s[sel[j]] == s[sel[best]] && sel[j] < sel[best])) {
          best = j;
        }
      }
      experts.push_back(static_cast<uint16_t>(sel[best]));
      for (int64_t j = 0; j < k; ++j) {
        if (j != best) experts.push_back(static_cast<uint16_t>(sel[j]));
      }
    }
  }
  seq_lens.push_back(n_tokens);
}

uint64_t model_fingerprint(MoeModel& model) {
  const ModelConfig& c = model.config();
  uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv1a(h, c.arch.data(), c.arch.size());
  const int64_t shape[] = {c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads,
                           c.resolved_head_dim(), c.ffn_dim, c.n_experts, c.top_k,
                           c.expert_ffn_dim, c.n_shared_experts, c.resolved_shared_ffn_dim(),
                           c.dense_layers, c.norm_topk_prob ? 1 : 0};
  h = fnv1a(h, shape, sizeof(shape));
  for (Param& p : model.params()) {
    if (p.name.find("mlp.gate.weight") == std::string::npos) continue;  // routers only
    const std::vector<float> w = model.backend().download_vec<float>(p.value);
    h = fnv1a(h, p.name.data(), p.name.size());
    h = fnv1a(h, w.data(), w.size() * sizeof(float));
  }
  return h;
}

void write_trace(const std::string& path, const RoutingTrace& trace) {
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, static_cast<uint32_t>(trace.n_moe_layers()));
  put<uint32_t>(out, static_cast<uint32_t>(trace.n_experts));
  put<uint32_t>(out, static_cast<uint32_t>(trace.top_k));
  put<uint64_t>(out, trace.fingerprint);
  put<uint64_t>(out, trace.seq_lens.size());
  put<uint64_t>(out, static_cast<uint64_t>(trace.n_tokens()));
  for (int32_t l : trace.layers) put<uint32_t>(out, static_cast<uint32_t>(l));
  for (int64_t n : trace.seq_lens) put<uint64_t>(out, static_cast<uint64_t>(n));
  out.append(reinterpret_cast<const char*>(trace.experts.data()),
             trace.experts.size() * sizeof(uint16_t));
  data::write_file_atomically(path, out);
}

RoutingTrace read_trace(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MOE_USAGE_CHECK(f.good(), "trace {}: cannot open", path);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  MOE_USAGE_CHECK(bytes.size() >= sizeof(kMagic) &&
                      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0,
                  "trace {}: not a routing trace (expected the magic MOETRACE)", path);
  Reader r{bytes, path, sizeof(kMagic)};
  const uint32_t version = r.get<uint32_t>("version");
  MOE_USAGE_CHECK(version == kVersion, "trace {}: version {}, this build reads {}", path, version,
                  kVersion);
  RoutingTrace t;
  const uint32_t M = r.get<uint32_t>("M");
  t.n_experts = r.get<uint32_t>("E");
  t.top_k = r.get<uint32_t>("k");
  t.fingerprint = r.get<uint64_t>("fingerprint");
  const uint64_t S = r.get<uint64_t>("S"), T = r.get<uint64_t>("T");
  MOE_USAGE_CHECK(M >= 1 && t.n_experts >= 1 && t.n_experts <= 65536 && t.top_k >= 1 &&
                      t.top_k <= t.n_experts,
                  "trace {}: header M={} E={} k={} (expected M >= 1, 1 <= k <= E <= 65536)",
                  path, M, t.n_experts, t.top_k);
  MOE_USAGE_CHECK(S <= bytes.size() && T <= bytes.size(), "trace {}: header claims {} sequences "
                  "and {} tokens in a {}-byte file", path, S, T, bytes.size());
  for (uint32_t m = 0; m < M; ++m) {
    t.layers.push_back(static_cast<int32_t>(r.get<uint32_t>("layers")));
  }
  uint64_t sum = 0;
  for (uint64_t s = 0; s < S; ++s) {
    t.seq_lens.push_back(static_cast<int64_t>(r.get<uint64_t>("sequence lengths")));
    sum += static_cast<uint64_t>(t.seq_lens.back());
  }
  MOE_USAGE_CHECK(sum == T, "trace {}: sequence lengths sum to {}, the header says {} tokens",
                  path, sum, T);
  const uint64_t n = T * M * static_cast<uint64_t>(t.top_k);
  MOE_USAGE_CHECK(bytes.size() - r.at == n * sizeof(uint16_t), "trace {}: {} bytes of experts, "
                  "expected T*M*k*2 = {}", path, bytes.size() - r.at, n * sizeof(uint16_t));
  t.experts.resize(n);
  std::memcpy(t.experts.data(), bytes.data() + r.at, n * sizeof(uint16_t));
  for (uint64_t i = 0; i < n; ++i) {
    MOE_USAGE_CHECK(t.experts[i] < t.n_experts, "trace {}: expert id {} at entry {} is not "
                    "below E = {}", path, t.experts[i], i, t.n_experts);
  }
  return t;
}

void check_trace_model(const RoutingTrace& trace, uint64_t fingerprint, const std::string& path) {
  MOE_USAGE_CHECK(trace.fingerprint == fingerprint, "trace {}: recorded on another model "
                  "(fingerprint {:016x}, this checkpoint has {:016x}); record it with moeinfer "
                  "--trace on this checkpoint", path, trace.fingerprint, fingerprint);
}

std::vector<LayerRouting> trace_as_routing(const RoutingTrace& trace) {
  const int64_t M = trace.n_moe_layers(), T = trace.n_tokens(), k = trace.top_k;
  std::vector<LayerRouting> out(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    out[m].layer = trace.layers[m];
    out[m].n_tokens = T;
    out[m].n_experts = trace.n_experts;
    out[m].top_k = k;
    out[m].topk_idx.resize(static_cast<size_t>(T * k));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < k; ++j) out[m].topk_idx[t * k + j] = trace.expert(t, m, j);
    }
  }
  return out;
}

}  // namespace moe::routing
