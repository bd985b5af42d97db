// Expert offload with an LRU cache and pathway prefetch (see expert_cache.h).
#include "infer/expert_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/safetensors.h"

namespace moe::infer {
namespace {

const char* const kProjections[3] = {"gate_proj", "up_proj", "down_proj"};

std::string expert_name(int64_t layer, int64_t e, int p) {
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + "." +
         kProjections[p] + ".weight";
}

}  // namespace

ExpertCache::ExpertCache(MoeModel& model, const std::string& path, int64_t capacity,
                         const std::string& prefetch, const routing::TransitionGraph* pathway)
    : model_(model), capacity_(capacity), n_experts_(model.config().n_experts),
      top_k_(model.config().top_k) {
  const ModelConfig& c = model.config();
  MOE_USAGE_CHECK(capacity >= top_k_ && capacity <= n_experts_, "--expert-cache {}: must lie "
                  "in [top_k = {}, n_experts = {}] (a token needs its top_k experts resident)",
                  capacity, top_k_, n_experts_);
  MOE_USAGE_CHECK(prefetch == "none" || prefetch == "pathway", "--prefetch {}: expected none or "
                  "pathway", prefetch);
  const int64_t M = c.n_layers - c.dense_layers;
  pathway_ = prefetch == "pathway";
  if (pathway_) {
    MOE_USAGE_CHECK(pathway != nullptr, "--prefetch pathway needs a calibration trace "
                    "(--calibration FILE)");
    MOE_USAGE_CHECK(pathway->n_layers == M && pathway->n_experts == n_experts_,
                    "--prefetch pathway: the calibration trace has {} MoE layers x {} experts, "
                    "the model {} x {}", pathway->n_layers, pathway->n_experts, M, n_experts_);
    const int64_t E = n_experts_;
    next_given_top1_.assign(pathway->weight.size(), 0.0);
    for (int64_t m = 0; m + 1 < M; ++m) {
      for (int64_t e = 0; e < E; ++e) {
        int64_t row = 0;
        for (int64_t v = 0; v < E; ++v) row += pathway->w(m, e, v);
        for (int64_t v = 0; v < E && row > 0; ++v) {
          next_given_top1_[(m * E + e) * E + v] =
              static_cast<double>(pathway->w(m, e, v)) / static_cast<double>(row);
        }
      }
    }
  }
  // Byte offsets of every expert tensor in the file (header: u64 length, JSON, then data).
  SafeTensorsReader reader(path);
  fd_ = ::open(path.c_str(), O_RDONLY);
  MOE_USAGE_CHECK(fd_ >= 0, "--expert-cache: cannot open {}", path);
  uint64_t header_len = 0;
  MOE_CHECK(::pread(fd_, &header_len, 8, 0) == 8, "{}: cannot read the header length", path);
  slots_.assign(static_cast<size_t>(M), std::vector<Slot>(static_cast<size_t>(n_experts_)));
  params_.resize(static_cast<size_t>(M));
  offsets_.resize(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t e = 0; e < n_experts_; ++e) {
      int64_t bytes = 0;
      for (int p = 0; p < 3; ++p) {
        const std::string name = expert_name(c.dense_layers + m, e, p);
        Param& prm = model.param(name);
        const SafeTensorInfo& info = reader.info(name);
        MOE_USAGE_CHECK(info.dtype == st_dtype_of(prm.value.dtype()), "--expert-cache: {} "
                        "stores {} as {}, the model computes in {} (offload reads raw bytes)",
                        path, name, st_dtype_name(info.dtype),
                        st_dtype_name(st_dtype_of(prm.value.dtype())));
        params_[m].push_back(&prm);
        offsets_[m].push_back(8 + header_len + info.begin);
        bytes += static_cast<int64_t>(info.end - info.begin);
      }
      expert_bytes_ = bytes;
      if (e < capacity_) {
        slots_[m][e].last_use = 0;
      } else {
        evict(m, e);
      }
    }
  }
  model.set_expert_hook([this](int64_t m, const Tensor& idx) { on_layer(m, idx); });
}

ExpertCache::~ExpertCache() {
  model_.set_expert_hook({});
  if (pending_.data.valid()) pending_.data.wait();
  if (fd_ >= 0) ::close(fd_);
}

int64_t ExpertCache::resident(int64_t m) const {
  int64_t n = 0;
  for (const Slot& s : slots_[m]) n += s.last_use >= 0 ? 1 : 0;
  return n;
}

std::vector<char> ExpertCache::read_expert(int64_t m, int64_t e) const {
  std::vector<char> out;
  for (int p = 0; p < 3; ++p) {
    const Param& prm = *params_[m][e * 3 + p];
    const size_t n = static_cast<size_t>(prm.value.nbytes());
    const size_t at = out.size();
    out.resize(at + n);
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd_, out.data() + at + done, n - done,
                                static_cast<off_t>(offsets_[m][e * 3 + p] + done));
      MOE_CHECK(r > 0, "expert cache: reading {} failed at byte {}", prm.name, done);
      done += static_cast<size_t>(r);
    }
  }
  return out;
}

void ExpertCache::install(int64_t m, int64_t e, const std::vector<char>& bytes) {
  Backend& be = model_.backend();
  size_t at = 0;
  for (int p = 0; p < 3; ++p) {
    Param& prm = *params_[m][e * 3 + p];
    const size_t n = static_cast<size_t>(prm.value.nbytes());
    be.upload(prm.value, bytes.data() + at, n);
    if (prm.lowp.defined()) be.convert(prm.lowp, prm.value);
    at += n;
  }
}

void ExpertCache::evict(int64_t m, int64_t e) {
  Backend& be = model_.backend();
  for (int p = 0; p < 3; ++p) {
    Param& prm = *params_[m][e * 3 + p];
    be.fill(prm.value, std::numeric_limits<double>::quiet_NaN());
    if (prm.lowp.defined()) be.fill(prm.lowp, std::numeric_limits<double>::quiet_NaN());
  }
  slots_[m][e] = Slot{};
}

void ExpertCache::on_layer(int64_t m, const Tensor& idx_t) {
  using Clock = std::chrono::steady_clock;
  const std::vector<int32_t> idx = model_.backend().download_vec<int32_t>(idx_t);
  const int64_t N = static_cast<int64_t>(idx.size()) / top_k_;
  if (m == 0) stats_.tokens += N;
  std::vector<Slot>& slots = slots_[m];
  // 1. Prefetched experts for this layer arrive (their victims were chosen when issued).
  if (pending_.layer == m) {
    const std::vector<std::vector<char>> data = pending_.data.get();
    for (size_t i = 0; i < pending_.experts.size(); ++i) {
      evict(m, pending_.victims[i]);
      install(m, pending_.experts[i], data[i]);
      slots[pending_.experts[i]] = Slot{++tick_, true};
      stats_.prefetched++;
      stats_.bytes_read += expert_bytes_;
    }
    pending_ = Pending{};
  }
  // 2. Demand: every distinct expert this pass selects.
  std::vector<uint8_t> needed(static_cast<size_t>(n_experts_), 0);
  std::vector<int64_t> order;
  for (int32_t e : idx) {
    if (!needed[e]) order.push_back(e);
    needed[e] = 1;
  }
  MOE_USAGE_CHECK(static_cast<int64_t>(order.size()) <= capacity_, "--expert-cache {}: a pass "
                  "needs {} distinct experts of MoE layer {}; use a smaller batch or a larger "
                  "cache", capacity_, order.size(), m);
  for (int64_t e : order) {
    stats_.accesses++;
    if (slots[e].last_use >= 0) {
      stats_.hits++;
      if (slots[e].prefetched) stats_.prefetch_hits++;
      slots[e] = Slot{++tick_, false};
      continue;
    }
    stats_.misses++;
    if (resident(m) >= capacity_) {
      int64_t victim = -1;
      for (int64_t v = 0; v < n_experts_; ++v) {
        if (slots[v].last_use < 0 || needed[v]) continue;
        if (victim < 0 || slots[v].last_use < slots[victim].last_use) victim = v;
      }
      MOE_CHECK(victim >= 0, "expert cache: no evictable expert in MoE layer {}", m);
      evict(m, victim);
    }
    const auto t0 = Clock::now();
    install(m, e, read_expert(m, e));
    stats_.read_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    stats_.bytes_read += expert_bytes_;
    slots[e] = Slot{++tick_, false};
  }
  // 3. Read ahead for the next MoE layer while this one computes.
  if (pathway_ && m + 1 < static_cast<int64_t>(slots_.size())) issue_prefetch(m, idx, N);
}

void ExpertCache::issue_prefetch(int64_t m, const std::vector<int32_t>& idx, int64_t N) {
  const int64_t E = n_experts_, next = m + 1;
  std::vector<double> score(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    const int64_t e = idx[t * top_k_];  // the router lists the top-scored expert first
    for (int64_t v = 0; v < E; ++v) score[v] += next_given_top1_[(m * E + e) * E + v];
  }
  // The predicted set: the experts of highest score, as many as the next layer will need at most
  // (N * k) and the cache holds; read those not resident.
  std::vector<int64_t> ranked;
  for (int64_t v = 0; v < E; ++v) {
    if (score[v] > 0) ranked.push_back(v);
  }
  std::sort(ranked.begin(), ranked.end(), [&](int64_t a, int64_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  });
  ranked.resize(static_cast<size_t>(std::min<int64_t>(
      {static_cast<int64_t>(ranked.size()), N * top_k_, capacity_})));
  std::vector<uint8_t> predicted(static_cast<size_t>(E), 0);
  for (int64_t v : ranked) predicted[v] = 1;
  // Victims by LRU among the resident experts not predicted (chosen now, blind to the demand).
  std::vector<int64_t> lru;
  for (int64_t v = 0; v < E; ++v) {
    if (slots_[next][v].last_use >= 0 && !predicted[v]) lru.push_back(v);
  }
  std::sort(lru.begin(), lru.end(), [&](int64_t a, int64_t b) {
    return slots_[next][a].last_use < slots_[next][b].last_use;
  });
  int64_t free_slots = capacity_ - resident(next);
  Pending p;
  p.layer = next;
  size_t used_victims = 0;
  for (int64_t v : ranked) {
    if (slots_[next][v].last_use >= 0) continue;  // already resident
    if (free_slots > 0) {
      --free_slots;
      p.experts.push_back(v);
      p.victims.push_back(v);  // no victim: evicting a non-resident expert only re-poisons it
      continue;
    }
    if (used_victims >= lru.size()) break;
    p.experts.push_back(v);
    p.victims.push_back(lru[used_victims++]);
  }
  if (p.experts.empty()) return;
  const std::vector<int64_t> experts = p.experts;
  p.data = std::async(std::launch::async, [this, next, experts] {
    std::vector<std::vector<char>> out;
    for (int64_t e : experts) out.push_back(read_expert(next, e));
    return out;
  });
  pending_ = std::move(p);
}

}  // namespace moe::infer
