// Tensor: a typed, shaped view of memory that belongs to one Backend (host or device).
// Tensors never own memory directly: storage is a shared_ptr whose deleter returns the bytes to
// the backend that allocated them, so a view keeps its storage alive. Ops never allocate; the
// caller (the model) plans every buffer once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace moe {

enum class DType { kF32, kF64, kBF16, kI32 };
enum class Device { kCpu, kCuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kF64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kI32; };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<void> storage, void* data, Shape shape, DType dtype, Device device)
      : storage_(std::move(storage)), data_(data), shape_(std::move(shape)), dtype_(dtype),
        device_(device) {}

  bool defined() const { return storage_ != nullptr; }
  bool empty() const { return !defined(); }
  void* data() const { return data_; }
  template <typename T> T* ptr() const {
    MOE_CHECK(DTypeOf<T>::value == dtype_, "tensor holds {} but was read as {}",
              dtype_name(dtype_), dtype_name(DTypeOf<T>::value));
    return static_cast<T*>(data_);
  }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const;
  size_t nbytes() const;
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // A view of rows [begin, end) along dimension 0 (contiguous, shares storage).
  Tensor rows(int64_t begin, int64_t end) const;
  // The same bytes with another shape of equal element count.
  Tensor reshape(Shape shape) const;
  // A view of `count` elements starting at element `offset`, with the given shape.
  Tensor slice_flat(int64_t offset, Shape shape) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
};

// Checks that a tensor has the expected shape, naming it in the error.
void check_shape(const Tensor& t, const Shape& expected, const char* name);

}  // namespace moe
