// CudnnAttention: causal GQA attention through cuDNN's fused scaled-dot-product attention (flash
// attention on tensor cores), built with the cudnn-frontend graph API. CudaBackend holds one when
// `train.attention` is cudnn or auto (kernels/attention.cu routes the attention ops here: all
// three under cudnn; under auto, forward and backward wherever cuDNN accepts the shape).
//
// Plain C++ (no CUDA header): implemented in cudnn_attention.cpp, compiled by the host compiler
// with the cudnn-frontend headers, so their templates never go through nvcc. The gather kernel of
// the KV-cache path is in attention.cu (cudnn_gather_kv).
//
// Plans: one cuDNN graph per (op, shape) is built, checked and planned the first time that shape
// is seen and kept in a map for the life of the backend; later calls only execute it.
// Workspace: the plan's workspace size comes from `workspace(bytes)`, which hands out the
// backend's grow-only scratch (nothing is allocated once the first step has run).
// Determinism: the backward graph asks for cuDNN's deterministic SDPA backward
// (set_deterministic_algorithm; dP-workspace dQ reduction) and rejects every engine carrying the
// NONDETERMINISTIC numerical note, so a shape with no deterministic engine is an error, never a
// silent nondeterministic plan.
//
// Supported (what eligible() answers): bf16 q/k/v/out, head_dim a multiple of 8 and <= 128,
// heads divisible by kv_heads, 16-byte aligned pointers, a GPU of compute capability >= 8.0 and
// cuDNN >= 9.0 at run time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "backend/backend.h"

struct CUstream_st;
struct cudnnContext;

namespace moe {

class CudnnAttention {
 public:
  using WorkspaceFn = std::function<void*(size_t bytes)>;
  // Creates the cuDNN handle on `stream`. Throws a usage error naming the reason when the device
  // or the cuDNN library cannot run fused attention (compute capability < 8.0, cuDNN < 9).
  CudnnAttention(int device, CUstream_st* stream, WorkspaceFn workspace);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Empty when cuDNN can run this call; otherwise why not (for a clear error).
  static std::string ineligible_reason(const AttnDims& dims, DType dtype,
                                       std::initializer_list<const void*> pointers);
  static std::string runtime_version();  // "9.19.0" (the library loaded at run time)

  // The Backend contract of the same ops (lib/backend/backend.h); shapes already checked.
  void forward(void* out, float* lse, const void* q, const void* k, const void* v,
               const AttnDims& dims);
  void backward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k,
                const void* v, const void* out, const float* lse, const AttnDims& dims);
  // The KV-cache forward over gathered keys: k_all / v_all are [B, s_kv, KV, hd] (each row's
  // prefix then its new keys, zero-padded past seq_len_kv[b]); seq_len_q / seq_len_kv are [B]
  // i32 on the device. Causal mask aligned bottom-right per row (new token t of a row with
  // prefix L sees keys 0 .. L + t), padding mask from the sequence lengths.
  void forward_padded(void* out, const void* q, const void* k_all, const void* v_all,
                      const int32_t* seq_len_q, const int32_t* seq_len_kv, int64_t s_kv,
                      const AttnDims& dims);

  // train.attention: auto asks before each forward / backward: true when a plan for this shape
  // exists or can be built now (built and kept); false, remembered per shape, when cuDNN
  // refuses the graph. Device and library problems still throw.
  bool can_run_forward(const AttnDims& dims);
  bool can_run_backward(const AttnDims& dims);
  size_t plans_built() const { return plans_.size(); }

 private:
  struct Plan;
  enum class Kind { kForward, kBackward, kForwardPadded };
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
  Plan& plan(Kind kind, const AttnDims& dims, int64_t s_kv);
  void execute(Plan& p, std::map<int64_t, void*> pointers, const char* op);

  int device_;
  CUstream_st* stream_;
  WorkspaceFn workspace_;
  cudnnContext* handle_ = nullptr;
  bool can_run(Kind kind, const AttnDims& dims);
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<Key, bool> refused_;  // shapes whose graph cuDNN refused (auto: native for those)
};

}  // namespace moe
