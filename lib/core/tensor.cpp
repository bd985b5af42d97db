#include "core/tensor.h"

#include "core/checked.h"

namespace moe {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  MOE_FAIL("unknown dtype {}", static_cast<int>(dtype));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF64: return "f64";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
  }
  return "?";
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? n + i : i;
  MOE_CHECK(j >= 0 && j < n, "dimension {} out of range for shape {}", i, shape_str(shape_));
  return shape_[j];
}

namespace {
// Element count of a shape; a shape whose count overflows int64 (a size from a config or a file
// that passed no limit) is a usage error naming the shape, never a wrapped count.
int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0 || __builtin_mul_overflow(n, s, &n)) {
      MOE_USAGE_FAIL("tensor shape {}: the element count does not fit in int64 (or an extent is "
                     "negative)", shape_str(shape));
    }
  }
  return n;
}
}  // namespace

int64_t Tensor::numel() const { return shape_numel(shape_); }

size_t Tensor::nbytes() const {
  return checked_mul<size_t>(static_cast<size_t>(numel()), dtype_size(dtype_), "tensor bytes");
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  MOE_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
            "rows [{}, {}) out of range for shape {}", begin, end, shape_str(shape_));
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  Shape s = shape_;
  s[0] = end - begin;
  char* base = static_cast<char*>(data_) + begin * row * dtype_size(dtype_);
  return Tensor(storage_, base, s, dtype_, device_);
}

Tensor Tensor::reshape(Shape shape) const {
  const int64_t n = shape_numel(shape);
  MOE_CHECK(n == numel(), "cannot reshape {} to {}", shape_str(shape_), shape_str(shape));
  return Tensor(storage_, data_, std::move(shape), dtype_, device_);
}

Tensor Tensor::slice_flat(int64_t offset, Shape shape) const {
  const int64_t n = shape_numel(shape);
  MOE_CHECK(offset >= 0 && n <= numel() && offset <= numel() - n,
            "flat slice of {} elements at offset {} out of range for {}",
            n, offset, shape_str(shape_));
  char* base = static_cast<char*>(data_) + offset * dtype_size(dtype_);
  return Tensor(storage_, base, std::move(shape), dtype_, device_);
}

void check_shape(const Tensor& t, const Shape& expected, const char* name) {
  MOE_CHECK(t.shape() == expected, "{}: expected shape {}, found {}", name, shape_str(expected),
            shape_str(t.shape()));
}

}  // namespace moe
