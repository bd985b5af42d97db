// CudnnAttention (cudnn_attention.h): cuDNN SDPA graphs through cudnn-frontend, one cached plan
// per (op, shape). Compiled by the host compiler; the frontend headers are a SYSTEM include (their
// own warnings are not ours) and its JSON serialisation is left out (CUDNN_FRONTEND_SKIP_JSON_LIB).
//
// cuDNN is loaded at run time (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING: the frontend calls cuDNN
// through dlsym on the handle opened below), not linked: the apps and tests then start on a
// machine without cuDNN (the GPU bundle does not ship it), and only `train.attention: cudnn`
// needs libcudnn.so.9 there, failing with a clear usage error when it is missing.
//
// Layouts (strides in elements) as cuDNN's [b, h, s, d] logical dims over the backend's tensors:
//   q, out, dq, dout [B*T, H*hd]   -> dims [B, H, T, hd],    strides [T*H*hd, hd, H*hd, 1]
//   k, v, dk, dv     [B*T, KV*hd]  -> dims [B, KV, T, hd],   strides [T*KV*hd, hd, KV*hd, 1]
//   lse              [B, H, T] f32 -> dims [B, H, T, 1],     strides [H*T, T, 1, 1]
// cuDNN's Stats output is the natural-log log-sum-exp of the scaled scores, m + ln(sum exp(s - m)),
// exactly the lse the native kernel and the CPU reference save, so either path's forward can feed
// either path's backward.
#include "cudnn_attention.h"

#include <dlfcn.h>
#include <stdlib.h>

#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <cudnn_frontend.h>

#include <spdlog/spdlog.h>

#include "core/error.h"

// The handle the frontend's dynamic-loading shim resolves every cuDNN symbol from.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace moe {
namespace fe = cudnn_frontend;

namespace {

enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqQ, kSeqKV,
};

constexpr int64_t kMaxHeadDim = 128;

std::string describe(const AttnDims& d) {
  return fmt::format("B={} T={} H={} KV={} hd={}", d.batch, d.seq, d.heads, d.kv_heads,
                     d.head_dim);
}

std::shared_ptr<fe::graph::Tensor_attributes> tensor_bhsd(fe::graph::Graph& g, const char* name,
                                                          int64_t uid, int64_t b, int64_t h,
                                                          int64_t s, int64_t d) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({b, h, s, d})
                      .set_stride({s * h * d, d, h * d, 1}));
}

void set_bhsd(const std::shared_ptr<fe::graph::Tensor_attributes>& t, int64_t uid, int64_t b,
              int64_t h, int64_t s, int64_t d) {
  t->set_output(true).set_uid(uid).set_dim({b, h, s, d}).set_stride({s * h * d, d, h * d, 1});
}

std::shared_ptr<fe::graph::Tensor_attributes> lse_tensor(fe::graph::Graph& g, int64_t b,
                                                          int64_t h, int64_t s) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name("lse")
                      .set_uid(kStats)
                      .set_dim({b, h, s, 1})
                      .set_stride({h * s, s, 1, 1})
                      .set_data_type(fe::DataType_t::FLOAT));
}

std::shared_ptr<fe::graph::Tensor_attributes> seq_len_tensor(fe::graph::Graph& g,
                                                              const char* name, int64_t uid,
                                                              int64_t b) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({b, 1, 1, 1})
                      .set_stride({1, 1, 1, 1})
                      .set_data_type(fe::DataType_t::INT32));
}

void check_fe(const fe::error_t& status, const char* step, const char* op, const AttnDims& d) {
  if (status.is_good()) return;
  auto& mutable_status = const_cast<fe::error_t&>(status);
  MOE_USAGE_FAIL("train.attention 'cudnn': cuDNN cannot run {} at {} ({} failed: {}); use "
                 "train.attention: native", op, describe(d), step, mutable_status.get_message());
}

}  // namespace

struct CudnnAttention::Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace_bytes = 0;
  AttnDims dims;
};

namespace {

// Opens libcudnn.so.9 once per process (the library dlopens its own sub-libraries).
void load_cudnn() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (fe::cudnn_dlhandle != nullptr) return;
  dlerror();
  void* handle = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    MOE_USAGE_FAIL("train.attention 'cudnn': cannot load cuDNN 9 (libcudnn.so.9: {}); install "
                   "cuDNN 9 where the loader finds it (LD_LIBRARY_PATH) or use train.attention: "
                   "native", why != nullptr ? why : "not found");
  }
  fe::cudnn_dlhandle = handle;
  // The frontend's own CUDA runtime calls go through a dlopen'ed libcudart as well: make it the
  // runtime major this backend was built with (the frontend would take libcudart.so.12 first if
  // both are installed), so it sees the same context and streams.
  const std::string cudart = fmt::format("libcudart.so.{}", CUDART_VERSION / 1000);
  setenv("CUDNN_FRONTEND_CUDART_LIB_NAME", cudart.c_str(), /*overwrite=*/0);
}

// Runs fn; an exception of the frontend (std::runtime_error for a missing symbol or library)
// becomes a moe::Error naming the op, so the apps report it like every other failure.
template <typename Fn>
void guarded(const char* op, Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    MOE_FAIL("{}: cuDNN frontend error: {}", op, e.what());
  }
}

std::string cudnn_error(cudnnStatus_t st) {
  const char* s = fe::detail::get_error_string(st);
  return s != nullptr ? s : fmt::format("cudnnStatus_t {}", static_cast<int>(st));
}

}  // namespace

CudnnAttention::CudnnAttention(int device, CUstream_st* stream, WorkspaceFn workspace)
    : device_(device), stream_(stream), workspace_(std::move(workspace)) {
  load_cudnn();
  size_t version = 0;
  guarded("train.attention 'cudnn'", [&] { version = fe::detail::get_backend_version(); });
  MOE_USAGE_CHECK(version >= 90000, "train.attention 'cudnn': needs cuDNN 9 or newer at run time, "
                  "found {}; use train.attention: native", runtime_version());
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, device_);
  MOE_CHECK(err == cudaSuccess, "cudaGetDeviceProperties({}): {}", device_,
            cudaGetErrorString(err));
  MOE_USAGE_CHECK(prop.major >= 8, "train.attention 'cudnn': cuDNN fused attention needs a GPU of "
                  "compute capability 8.0 or newer, found {}.{} ({}); use train.attention: native",
                  prop.major, prop.minor, prop.name);
  cudnnStatus_t st = fe::detail::create_handle(&handle_);
  MOE_CHECK(st == CUDNN_STATUS_SUCCESS, "cudnnCreate: {}", cudnn_error(st));
  st = fe::detail::set_stream(handle_, stream_);
  MOE_CHECK(st == CUDNN_STATUS_SUCCESS, "cudnnSetStream: {}", cudnn_error(st));
}

CudnnAttention::~CudnnAttention() {
  plans_.clear();
  if (handle_ != nullptr) fe::detail::destroy_handle(handle_);
}

std::string CudnnAttention::runtime_version() {
  if (fe::cudnn_dlhandle == nullptr) return "not loaded";
  // major * 10000 + minor * 100 + patch since cuDNN 9
  const size_t v = fe::detail::get_backend_version();
  return fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
}

std::string CudnnAttention::ineligible_reason(const AttnDims& d, DType dtype,
                                              std::initializer_list<const void*> pointers) {
  if (dtype != DType::kBF16)
    return fmt::format("cuDNN fused attention takes bf16 activations, found {} (set "
                       "train.dtype: bf16)", dtype_name(dtype));
  if (d.head_dim % 8 != 0 || d.head_dim > kMaxHeadDim)
    return fmt::format("cuDNN fused attention needs head_dim a multiple of 8 and at most {}, "
                       "found {}", kMaxHeadDim, d.head_dim);
  if (d.kv_heads < 1 || d.heads % d.kv_heads != 0)
    return fmt::format("heads {} must be a multiple of kv_heads {}", d.heads, d.kv_heads);
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      return "cuDNN fused attention needs 16-byte aligned q/k/v/out pointers (a row view "
             "starting inside a tensor may not be)";
  return {};
}

bool CudnnAttention::can_run_forward(const AttnDims& dims) { return can_run(Kind::kForward, dims); }
bool CudnnAttention::can_run_backward(const AttnDims& dims) {
  return can_run(Kind::kBackward, dims);
}

bool CudnnAttention::can_run(Kind kind, const AttnDims& d) {
  const Key key{static_cast<int>(kind), d.batch, d.seq, d.heads, d.kv_heads, d.head_dim, d.seq};
  if (refused_.count(key)) return false;
  try {
    plan(kind, d, d.seq);
    return true;
  } catch (const Error& e) {
    // plan() reports a graph cuDNN will not build or validate as a usage error; anything else
    // (a device or library failure) is not a reason to fall back quietly.
    if (e.kind() != ErrorKind::kUsage) throw;
    refused_[key] = true;
    spdlog::debug("train.attention auto: native attention for this shape ({})", e.what());
    return false;
  }
}

CudnnAttention::Plan& CudnnAttention::plan(Kind kind, const AttnDims& d, int64_t s_kv) {
  const Key key{static_cast<int>(kind), d.batch, d.seq, d.heads, d.kv_heads, d.head_dim, s_kv};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  const char* op = kind == Kind::kForward    ? "attention_forward"
                   : kind == Kind::kBackward ? "attention_backward"
                                             : "attention_forward_cached";
  const int64_t B = d.batch, T = d.seq, H = d.heads, KV = d.kv_heads, D = d.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto q = tensor_bhsd(*g, "q", kQ, B, H, T, D);
  if (kind == Kind::kForward) {
    auto k = tensor_bhsd(*g, "k", kK, B, KV, T, D);
    auto v = tensor_bhsd(*g, "v", kV, B, KV, T, D);
    auto opts = fe::graph::SDPA_attributes()
                    .set_name("sdpa_forward")
                    .set_generate_stats(true)
                    .set_causal_mask(true)
                    .set_attn_scale(scale);
    auto [o, stats] = g->sdpa(q, k, v, opts);
    set_bhsd(o, kO, B, H, T, D);
    stats->set_output(true)
        .set_uid(kStats)
        .set_dim({B, H, T, 1})
        .set_stride({H * T, T, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
  } else if (kind == Kind::kBackward) {
    auto k = tensor_bhsd(*g, "k", kK, B, KV, T, D);
    auto v = tensor_bhsd(*g, "v", kV, B, KV, T, D);
    auto o = tensor_bhsd(*g, "out", kO, B, H, T, D);
    auto dout = tensor_bhsd(*g, "dout", kDO, B, H, T, D);
    auto lse = lse_tensor(*g, B, H, T);
    auto opts = fe::graph::SDPA_backward_attributes()
                    .set_name("sdpa_backward")
                    .set_causal_mask(true)
                    .set_attn_scale(scale)
                    .set_deterministic_algorithm(true);
    auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, lse, opts);
    set_bhsd(dq, kDQ, B, H, T, D);
    set_bhsd(dk, kDK, B, KV, T, D);
    set_bhsd(dv, kDV, B, KV, T, D);
  } else {
    auto k = tensor_bhsd(*g, "k_all", kK, B, KV, s_kv, D);
    auto v = tensor_bhsd(*g, "v_all", kV, B, KV, s_kv, D);
    auto seq_q = seq_len_tensor(*g, "seq_len_q", kSeqQ, B);
    auto seq_kv = seq_len_tensor(*g, "seq_len_kv", kSeqKV, B);
    auto opts = fe::graph::SDPA_attributes()
                    .set_name("sdpa_forward_cached")
                    .set_generate_stats(false)
                    .set_padding_mask(true)
                    .set_seq_len_q(seq_q)
                    .set_seq_len_kv(seq_kv)
                    .set_causal_mask_bottom_right(true)
                    .set_attn_scale(scale);
    auto [o, stats] = g->sdpa(q, k, v, opts);
    (void)stats;  // not generated (inference)
    set_bhsd(o, kO, B, H, T, D);
  }

  check_fe(g->validate(), "validate", op, d);
  check_fe(g->build_operation_graph(handle_), "build_operation_graph", op, d);
  check_fe(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}),
           "create_execution_plans", op, d);
  // The project's determinism rule: no engine cuDNN itself flags as nondeterministic.
  g->deselect_numeric_notes({fe::NumericalNote_t::NONDETERMINISTIC});
  check_fe(g->check_support(handle_), "check_support (deterministic engines only)", op, d);
  check_fe(g->build_plans(handle_, fe::BuildPlanPolicy_t::HEURISTICS_CHOICE),
           "build_plans", op, d);
  auto p = std::make_unique<Plan>();
  p->graph = std::move(g);
  p->dims = d;
  check_fe(p->graph->get_workspace_size(p->workspace_bytes), "get_workspace_size", op, d);
  Plan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

void CudnnAttention::execute(Plan& p, std::map<int64_t, void*> pointers, const char* op) {
  std::unordered_map<int64_t, void*> pack(pointers.begin(), pointers.end());
  void* ws = p.workspace_bytes > 0 ? workspace_(static_cast<size_t>(p.workspace_bytes)) : nullptr;
  fe::error_t status = p.graph->execute(handle_, pack, ws);
  MOE_CHECK(status.is_good(), "{} (cuDNN {}, {}): execute failed: {}", op, runtime_version(),
            describe(p.dims), status.get_message());
}

void CudnnAttention::forward(void* out, float* lse, const void* q, const void* k, const void* v,
                             const AttnDims& dims) {
  guarded("attention_forward", [&] {
    Plan& p = plan(Kind::kForward, dims, dims.seq);
    execute(p,
            {{kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)}, {kV, const_cast<void*>(v)},
             {kO, out}, {kStats, lse}},
            "attention_forward");
  });
}

void CudnnAttention::backward(void* dq, void* dk, void* dv, const void* dout, const void* q,
                              const void* k, const void* v, const void* out, const float* lse,
                              const AttnDims& dims) {
  guarded("attention_backward", [&] {
    Plan& p = plan(Kind::kBackward, dims, dims.seq);
    execute(p,
            {{kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)}, {kV, const_cast<void*>(v)},
             {kO, const_cast<void*>(out)}, {kDO, const_cast<void*>(dout)},
             {kStats, const_cast<float*>(lse)}, {kDQ, dq}, {kDK, dk}, {kDV, dv}},
            "attention_backward");
  });
}

void CudnnAttention::forward_padded(void* out, const void* q, const void* k_all,
                                    const void* v_all, const int32_t* seq_len_q,
                                    const int32_t* seq_len_kv, int64_t s_kv,
                                    const AttnDims& dims) {
  guarded("attention_forward_cached", [&] {
    Plan& p = plan(Kind::kForwardPadded, dims, s_kv);
    execute(p,
            {{kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k_all)},
             {kV, const_cast<void*>(v_all)}, {kO, out},
             {kSeqQ, const_cast<int32_t*>(seq_len_q)},
             {kSeqKV, const_cast<int32_t*>(seq_len_kv)}},
            "attention_forward_cached");
  });
}

}  // namespace moe
