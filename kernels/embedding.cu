// Embedding lookup and its backward pass.
//
// Backward is a scatter-add of token rows into the table, made deterministic without float
// atomics by grouping tokens by id first: a stable radix sort (CUB) of (id, token index) pairs,
// then sums over runs of equal ids in token order. The sorted positions are cut into fixed
// chunks of kRunChunk (issue 17: one CTA per whole run left a token that makes up 5% of a
// 131k-token batch, ~6.5k rows x d, to a single CTA). Pass 1, one CTA per chunk: a run that lies
// inside the chunk is summed and added to dtable[id] directly; the piece of a run that crosses a
// chunk boundary is summed into a per-chunk partial row (slot 0 for the chunk's first run, slot
// 1 for its last). Pass 2, one CTA per chunk: the chunk holding the head of a crossing run adds
// that run's partials, in chunk order, to dtable[id]. Every table row has one writer and every
// sum a fixed order, so the result does not depend on scheduling. Ids outside [0, V) (already
// reported by the forward pass) sort into a sentinel run past the end and are skipped.
#include <cub/device/device_radix_sort.cuh>

#include "cuda_backend.h"

namespace moe {
using namespace cuda;

namespace {

template <typename T>
__global__ void embedding_forward_kernel(T* y, const int32_t* ids, const T* table, int64_t n,
                                         int64_t d, int64_t vocab, int* error_flag) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = i / d, c = i % d;
    int32_t id = ids[t];
    if (id < 0 || id >= vocab) {
      raise_device_error(error_flag, kErrTokenId);
      y[i] = from_f<T>(0.0f);
      continue;
    }
    y[i] = table[int64_t(id) * d + c];
  }
}

__global__ void embedding_sort_input_kernel(int32_t* keys, int32_t* tokens, const int32_t* ids,
                                            int64_t n, int64_t vocab) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int32_t id = ids[t];
    keys[t] = (id >= 0 && id < vocab) ? id : static_cast<int32_t>(vocab);
    tokens[t] = static_cast<int32_t>(t);
  }
}

constexpr int64_t kRunChunk = 128;  // sorted positions per CTA
constexpr int kRunThreads = 128;

// Pass 1: chunk blockIdx.x = sorted positions [i0, i1). Every thread walks the same runs (the
// keys are read uniformly), each owning columns c = threadIdx.x + j * blockDim.x.
template <typename T>
__global__ void embedding_backward_chunks_kernel(float* dtable, float* partial, const T* dy,
                                                 const int32_t* keys, const int32_t* tokens,
                                                 int64_t n, int64_t d, int64_t vocab) {
  const int64_t chunk = blockIdx.x, i0 = chunk * kRunChunk;
  const int64_t i1 = i0 + kRunChunk < n ? i0 + kRunChunk : n;
  for (int64_t i = i0; i < i1;) {
    const int32_t key = keys[i];
    int64_t end = i + 1;
    while (end < i1 && keys[end] == key) ++end;
    const bool crosses = (i == i0 && i0 > 0 && keys[i0 - 1] == key) ||
                         (end == i1 && i1 < n && keys[i1] == key);
    if (key < vocab) {
      float* out = crosses ? partial + (2 * chunk + (i == i0 ? 0 : 1)) * d
                           : dtable + int64_t(key) * d;
      for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = i; j < end; ++j) acc += to_f(dy[int64_t(tokens[j]) * d + c]);
        out[c] = crosses ? acc : out[c] + acc;
      }
    }
    i = end;
  }
}

// Pass 2: if the last run of chunk blockIdx.x starts in it and crosses into the next chunk, add
// its pieces (this chunk's, then slot 0 of each following chunk it covers) to dtable[id].
__global__ void embedding_backward_join_kernel(float* dtable, const float* partial,
                                               const int32_t* keys, int64_t n, int64_t d,
                                               int64_t vocab) {
  const int64_t chunk = blockIdx.x, i0 = chunk * kRunChunk;
  const int64_t i1 = i0 + kRunChunk < n ? i0 + kRunChunk : n;
  const int32_t key = keys[i1 - 1];
  if (key >= vocab || i1 >= n || keys[i1] != key) return;  // invalid ids, or no crossing run
  int64_t head = i1 - 1;
  while (head > i0 && keys[head - 1] == key) --head;
  if (head == i0 && i0 > 0 && keys[i0 - 1] == key) return;  // the run starts in an earlier chunk
  const int64_t chunks = (n + kRunChunk - 1) / kRunChunk;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = partial[(2 * chunk + (head == i0 ? 0 : 1)) * d + c];
    for (int64_t next = chunk + 1; next < chunks && keys[next * kRunChunk] == key; ++next)
      acc += partial[2 * next * d + c];
    dtable[int64_t(key) * d + c] += acc;
  }
}

int key_bits(int64_t max_key) {
  int bits = 1;
  while ((int64_t(1) << bits) <= max_key) ++bits;
  return bits;
}

}  // namespace

void CudaBackend::embedding_forward(Tensor& y, const Tensor& ids, const Tensor& table) {
  MOE_CHECK(table.ndim() == 2, "embedding_forward: table expected [V, d], found {}",
            shape_str(table.shape()));
  int64_t vocab = table.dim(0), d = table.dim(1), n = ids.numel();
  check_shape(y, {n, d}, "embedding_forward: y");
  MOE_CHECK(ids.dtype() == DType::kI32 && y.dtype() == table.dtype(),
            "embedding_forward: ids must be i32 and y match the table dtype {}, found {} {}",
            dtype_name(table.dtype()), dtype_name(ids.dtype()), dtype_name(y.dtype()));
  if (n * d == 0) return;
  MOE_DISPATCH_ACT(y.dtype(), "embedding_forward", T, {
    embedding_forward_kernel<T><<<grid_for(n * d), kBlock, 0, stream_>>>(
        static_cast<T*>(y.data()), ids.ptr<int32_t>(), static_cast<const T*>(table.data()), n,
        d, vocab, error_flag_);
    MOE_LAUNCH_CHECK("embedding_forward_kernel");
  });
  after_op("embedding_forward");
}

void CudaBackend::embedding_backward(Tensor& dtable, const Tensor& dy, const Tensor& ids) {
  MOE_CHECK(dtable.ndim() == 2, "embedding_backward: dtable expected [V, d], found {}",
            shape_str(dtable.shape()));
  int64_t vocab = dtable.dim(0), d = dtable.dim(1), n = ids.numel();
  check_shape(dy, {n, d}, "embedding_backward: dy");
  MOE_CHECK(dtable.dtype() == DType::kF32 && ids.dtype() == DType::kI32,
            "embedding_backward: dtable must be f32 and ids i32, found {} {}",
            dtype_name(dtable.dtype()), dtype_name(ids.dtype()));
  if (n * d == 0) return;
  MOE_CHECK(n < (int64_t(1) << 31) && vocab < (int64_t(1) << 31) - 1,
            "embedding_backward: {} tokens / vocabulary {} exceed i32 indexing", n, vocab);
  // Scratch A: keys_in, keys_out, tokens_in, tokens_out (n each), then CUB's temporary storage.
  const int bits = key_bits(vocab);  // the sentinel key `vocab` must fit too
  size_t temp_bytes = 0;
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, (const int32_t*)nullptr,
                                                 (int32_t*)nullptr, (const int32_t*)nullptr,
                                                 (int32_t*)nullptr, n, 0, bits, stream_));
  const size_t ints = 4 * size_t(n);
  char* base = static_cast<char*>(scratch(kScratchA, ints * sizeof(int32_t) + temp_bytes + 256));
  int32_t* keys_in = reinterpret_cast<int32_t*>(base);
  int32_t* keys_out = keys_in + n;
  int32_t* tokens_in = keys_out + n;
  int32_t* tokens_out = tokens_in + n;
  void* temp = base + ((ints * sizeof(int32_t) + 255) / 256) * 256;
  embedding_sort_input_kernel<<<grid_for(n), kBlock, 0, stream_>>>(keys_in, tokens_in,
                                                                   ids.ptr<int32_t>(), n, vocab);
  MOE_LAUNCH_CHECK("embedding_sort_input_kernel");
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, tokens_in,
                                                 tokens_out, n, 0, bits, stream_));
  const int64_t chunks = (n + kRunChunk - 1) / kRunChunk;
  MOE_CHECK(chunks <= 0x7fffffff, "embedding_backward: {} tokens exceed the grid", n);
  float* partial = static_cast<float*>(scratch(kScratchB, sizeof(float) * 2 * chunks * d));
  MOE_DISPATCH_ACT(dy.dtype(), "embedding_backward", T, {
    embedding_backward_chunks_kernel<T><<<static_cast<unsigned>(chunks), kRunThreads, 0,
                                          stream_>>>(dtable.ptr<float>(), partial,
                                                     static_cast<const T*>(dy.data()), keys_out,
                                                     tokens_out, n, d, vocab);
    MOE_LAUNCH_CHECK("embedding_backward_chunks_kernel");
  });
  embedding_backward_join_kernel<<<static_cast<unsigned>(chunks), kRunThreads, 0, stream_>>>(
      dtable.ptr<float>(), partial, keys_out, n, d, vocab);
  MOE_LAUNCH_CHECK("embedding_backward_join_kernel");
  after_op("embedding_backward");
}

}  // namespace moe
