// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {string: string}}, then the raw little-endian tensor bytes.
//
// The reader maps the file read-only and validates everything before any tensor is handed out:
// header length within the file, JSON syntax, known dtypes, non-negative shapes, data_offsets in
// bounds, consistent with shape * dtype size and not overlapping. Any problem is a moe::Error that
// names the file (and the tensor) and says what was expected against what was found.
// The writer sorts tensors by name, pads the header with spaces to a multiple of 8 bytes (as the
// reference implementation does) and can write through a temporary file renamed into place.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moe {

enum class StDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t st_dtype_size(StDType dtype);
const char* st_dtype_name(StDType dtype);  // "F32", "BF16", ...
StDType st_dtype_from_name(const std::string& name, const std::string& context);
StDType st_dtype_of(DType dtype);          // F32, F64, BF16, I32

struct SafeTensorInfo {
  std::string name;
  StDType dtype = StDType::kF32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

class SafeTensorsReader {
 public:
  // Maps and validates the file; throws moe::Error naming the file on any problem.
  explicit SafeTensorsReader(const std::string& path);
  ~SafeTensorsReader();
  SafeTensorsReader(const SafeTensorsReader&) = delete;
  SafeTensorsReader& operator=(const SafeTensorsReader&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const SafeTensorInfo& info(const std::string& name) const;  // throws naming the tensor
  const Shape& shape(const std::string& name) const { return info(name).shape; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's raw little-endian bytes (valid while the reader lives).
  const uint8_t* raw(const std::string& name, size_t* nbytes) const;
  // Converted copies; floating-point dtypes convert to each other, integer dtypes to integers.
  std::vector<float> to_f32(const std::string& name) const;
  std::vector<double> to_f64(const std::string& name) const;
  std::vector<int32_t> to_i32(const std::string& name) const;  // I32, I64 (range-checked), U8..
  // Into a host vector of the given Tensor dtype's element type, as raw bytes (F32, F64, BF16
  // from any floating-point file dtype; I32 from integer dtypes).
  std::vector<uint8_t> to_dtype(const std::string& name, DType dtype) const;

 private:
  void parse_header(uint64_t header_len);
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  size_t data_size_ = 0;
  std::map<std::string, SafeTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafeTensorsWriter {
 public:
  // Copies the bytes; nbytes must equal numel(shape) * st_dtype_size(dtype).
  void add(const std::string& name, StDType dtype, const Shape& shape, const void* data,
           size_t nbytes);
  void add_f32(const std::string& name, const Shape& shape, const std::vector<float>& values);
  void add_f64(const std::string& name, const Shape& shape, const std::vector<double>& values);
  void add_i32(const std::string& name, const Shape& shape, const std::vector<int32_t>& values);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }

  // Writes the file at `path`. With atomic, writes `path`.tmp, flushes and renames it into
  // place, so a reader never sees a half-written file.
  void write(const std::string& path, bool atomic = true) const;

 private:
  struct Entry {
    StDType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> tensors_;  // sorted by name
  std::map<std::string, std::string> metadata_;
};

// bf16 <-> f32 on the host (round to nearest even; NaN stays NaN).
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);

}  // namespace moe
