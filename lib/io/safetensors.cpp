// safetensors reader (mmap + validation) and writer; format notes in safetensors.h.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/checked.h"
#include "core/error.h"

namespace moe {
namespace {

struct DTypeEntry {
  StDType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {StDType::kF64, "F64", 8},  {StDType::kF32, "F32", 4}, {StDType::kF16, "F16", 2},
    {StDType::kBF16, "BF16", 2}, {StDType::kI64, "I64", 8}, {StDType::kI32, "I32", 4},
    {StDType::kI16, "I16", 2},  {StDType::kI8, "I8", 1},   {StDType::kU8, "U8", 1},
    {StDType::kBool, "BOOL", 1},
};

bool is_float(StDType t) {
  return t == StDType::kF64 || t == StDType::kF32 || t == StDType::kF16 || t == StDType::kBF16;
}

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) v = mant ? std::numeric_limits<float>::quiet_NaN()
                               : std::numeric_limits<float>::infinity();
  else v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

// Element i of a floating-point tensor as double (host is little-endian, as is the format).
double float_at(const uint8_t* p, StDType t, int64_t i) {
  switch (t) {
    case StDType::kF64: { double v; std::memcpy(&v, p + 8 * i, 8); return v; }
    case StDType::kF32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case StDType::kBF16: { uint16_t b; std::memcpy(&b, p + 2 * i, 2); return bf16_to_f32(b); }
    case StDType::kF16: { uint16_t b; std::memcpy(&b, p + 2 * i, 2); return f16_to_f32(b); }
    default: break;
  }
  MOE_FAIL("internal: float_at on {}", st_dtype_name(t));
}

int64_t int_at(const uint8_t* p, StDType t, int64_t i) {
  switch (t) {
    case StDType::kI64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); return v; }
    case StDType::kI32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case StDType::kI16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); return v; }
    case StDType::kI8: return static_cast<int8_t>(p[i]);
    case StDType::kU8: case StDType::kBool: return p[i];
    default: break;
  }
  MOE_FAIL("internal: int_at on {}", st_dtype_name(t));
}

uint64_t checked_u64(const nlohmann::json& j, const std::string& file, const std::string& what) {
  MOE_CHECK(j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0),
            "{}: {} must be a non-negative integer, found {}", file, what, j.dump());
  return j.get<uint64_t>();
}

}  // namespace

size_t st_dtype_size(StDType dtype) {
  for (const auto& e : kDTypes) if (e.dtype == dtype) return e.size;
  MOE_FAIL("unknown safetensors dtype {}", static_cast<int>(dtype));
}

const char* st_dtype_name(StDType dtype) {
  for (const auto& e : kDTypes) if (e.dtype == dtype) return e.name;
  return "?";
}

StDType st_dtype_from_name(const std::string& name, const std::string& context) {
  for (const auto& e : kDTypes) if (name == e.name) return e.dtype;
  MOE_FAIL("{}: unsupported dtype \"{}\" (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
           context, name);
}

StDType st_dtype_of(DType dtype) {
  switch (dtype) {
    case DType::kF32: return StDType::kF32;
    case DType::kF64: return StDType::kF64;
    case DType::kBF16: return StDType::kBF16;
    case DType::kI32: return StDType::kI32;
  }
  MOE_FAIL("no safetensors dtype for {}", dtype_name(dtype));
}

float bf16_to_f32(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float value) {
  uint32_t u;
  std::memcpy(&u, &value, 4);
  if (std::isnan(value)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

int64_t SafeTensorInfo::numel() const {
  return checked_numel(shape, fmt::format("safetensors tensor \"{}\" shape {}", name,
                                          shape_str(shape)));
}

// ---- reader ------------------------------------------------------------------------------------

SafeTensorsReader::SafeTensorsReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOE_CHECK(fd >= 0, "{}: cannot open safetensors file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    MOE_FAIL("{}: not a regular file", path);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    MOE_FAIL("{}: truncated safetensors file: {} bytes, expected at least the 8-byte header "
             "length", path, size);
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  MOE_CHECK(m != MAP_FAILED, "{}: mmap failed: {}", path, std::strerror(errno));
  map_ = static_cast<const uint8_t*>(m);
  map_size_ = size;
  try {
    const uint64_t header_len = read_le_u64(map_);
    MOE_CHECK(header_len <= size - 8,
              "{}: corrupt or truncated safetensors file: header length {} exceeds the {} bytes "
              "after the length field", path, header_len, size - 8);
    parse_header(header_len);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(map_), map_size_);
    map_ = nullptr;
    throw;
  }
}

SafeTensorsReader::~SafeTensorsReader() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

void SafeTensorsReader::parse_header(uint64_t header_len) {
  const char* text = reinterpret_cast<const char*>(map_ + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + header_len);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, or out_of_range for a number beyond double (found by fuzz_corpus_jsonl)
    MOE_FAIL("{}: safetensors header is not valid JSON ({} bytes): {}", path_, header_len,
             e.what());
  }
  MOE_CHECK(header.is_object(), "{}: safetensors header must be a JSON object, found {}", path_,
            header.type_name());
  data_ = map_ + 8 + header_len;
  data_size_ = map_size_ - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      MOE_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings", path_);
      for (auto m = v.begin(); m != v.end(); ++m) {
        MOE_CHECK(m.value().is_string(), "{}: __metadata__[\"{}\"] must be a string, found {}",
                  path_, m.key(), m.value().type_name());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string ctx = fmt::format("{}: tensor \"{}\"", path_, name);
    MOE_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") &&
                  v.contains("data_offsets"),
              "{}: expected an object with dtype, shape and data_offsets, found {}", ctx,
              v.dump());
    MOE_CHECK(v["dtype"].is_string(), "{}: dtype must be a string", ctx);
    SafeTensorInfo info;
    info.name = name;
    info.dtype = st_dtype_from_name(v["dtype"].get<std::string>(), ctx);
    MOE_CHECK(v["shape"].is_array(), "{}: shape must be an array", ctx);
    for (const auto& s : v["shape"]) {
      const uint64_t n = checked_u64(s, path_, fmt::format("tensor \"{}\" shape entry", name));
      MOE_CHECK(n < (uint64_t{1} << 48), "{}: shape entry {} is implausibly large", ctx, n);
      info.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& off = v["data_offsets"];
    MOE_CHECK(off.is_array() && off.size() == 2, "{}: data_offsets must be [begin, end]", ctx);
    info.begin = checked_u64(off[0], path_, fmt::format("tensor \"{}\" data_offsets", name));
    info.end = checked_u64(off[1], path_, fmt::format("tensor \"{}\" data_offsets", name));
    MOE_CHECK(info.begin <= info.end, "{}: data_offsets [{}, {}] are reversed", ctx, info.begin,
              info.end);
    MOE_CHECK(info.end <= data_size_,
              "{}: data_offsets end {} beyond the {} bytes of data (file truncated?)", ctx,
              info.end, data_size_);
    // Exact byte count: a shape whose count or byte size wraps modulo 2^64 could otherwise match
    // a small data span and pass this check.
    const uint64_t expected = checked_mul<uint64_t>(static_cast<uint64_t>(info.numel()),
                                                    st_dtype_size(info.dtype), ctx);
    MOE_CHECK(info.end - info.begin == expected,
              "{}: data_offsets span {} bytes but shape {} of {} needs {}", ctx,
              info.end - info.begin, shape_str(info.shape), st_dtype_name(info.dtype), expected);
    tensors_[name] = std::move(info);
  }

  // Tensors may not overlap (each byte of the data section belongs to at most one tensor).
  std::vector<const SafeTensorInfo*> by_offset;
  for (const auto& kv : tensors_) by_offset.push_back(&kv.second);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafeTensorInfo* a,
                                                    const SafeTensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    MOE_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end || by_offset[i]->begin ==
                  by_offset[i]->end,
              "{}: tensors \"{}\" and \"{}\" overlap in the data section", path_,
              by_offset[i - 1]->name, by_offset[i]->name);
  }
}

std::vector<std::string> SafeTensorsReader::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const SafeTensorInfo& SafeTensorsReader::info(const std::string& name) const {
  auto it = tensors_.find(name);
  MOE_CHECK(it != tensors_.end(), "{}: no tensor named \"{}\" ({} tensors in the file)", path_,
            name, tensors_.size());
  return it->second;
}

const uint8_t* SafeTensorsReader::raw(const std::string& name, size_t* nbytes) const {
  const SafeTensorInfo& i = info(name);
  if (nbytes) *nbytes = static_cast<size_t>(i.end - i.begin);
  return data_ + i.begin;
}

std::vector<double> SafeTensorsReader::to_f64(const std::string& name) const {
  const SafeTensorInfo& i = info(name);
  MOE_CHECK(is_float(i.dtype), "{}: tensor \"{}\" is {}, expected a floating-point dtype", path_,
            name, st_dtype_name(i.dtype));
  const uint8_t* p = data_ + i.begin;
  std::vector<double> out(static_cast<size_t>(i.numel()));
  for (int64_t j = 0; j < i.numel(); ++j) out[j] = float_at(p, i.dtype, j);
  return out;
}

std::vector<float> SafeTensorsReader::to_f32(const std::string& name) const {
  const SafeTensorInfo& i = info(name);
  if (i.dtype == StDType::kF32) {
    std::vector<float> out(static_cast<size_t>(i.numel()));
    if (!out.empty()) std::memcpy(out.data(), data_ + i.begin, out.size() * 4);
    return out;
  }
  std::vector<double> d = to_f64(name);
  return std::vector<float>(d.begin(), d.end());
}

std::vector<int32_t> SafeTensorsReader::to_i32(const std::string& name) const {
  const SafeTensorInfo& i = info(name);
  MOE_CHECK(!is_float(i.dtype), "{}: tensor \"{}\" is {}, expected an integer dtype", path_,
            name, st_dtype_name(i.dtype));
  const uint8_t* p = data_ + i.begin;
  std::vector<int32_t> out(static_cast<size_t>(i.numel()));
  for (int64_t j = 0; j < i.numel(); ++j) {
    const int64_t v = int_at(p, i.dtype, j);
    MOE_CHECK(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
              "{}: tensor \"{}\" element {} = {} does not fit in int32", path_, name, j, v);
    out[j] = static_cast<int32_t>(v);
  }
  return out;
}

std::vector<uint8_t> SafeTensorsReader::to_dtype(const std::string& name, DType dtype) const {
  std::vector<uint8_t> bytes;
  auto put = [&bytes](const auto& v) {
    bytes.resize(v.size() * sizeof(v[0]));
    if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  };
  switch (dtype) {
    case DType::kF32: put(to_f32(name)); break;
    case DType::kF64: put(to_f64(name)); break;
    case DType::kI32: put(to_i32(name)); break;
    case DType::kBF16: {
      std::vector<float> f = to_f32(name);
      std::vector<uint16_t> b(f.size());
      for (size_t j = 0; j < f.size(); ++j) b[j] = f32_to_bf16(f[j]);
      put(b);
      break;
    }
  }
  return bytes;
}

// ---- writer ------------------------------------------------------------------------------------

void SafeTensorsWriter::add(const std::string& name, StDType dtype, const Shape& shape,
                            const void* data, size_t nbytes) {
  MOE_CHECK(!name.empty() && name != "__metadata__", "safetensors: invalid tensor name \"{}\"",
            name);
  MOE_CHECK(!tensors_.count(name), "safetensors: tensor \"{}\" added twice", name);
  const std::string what = fmt::format("safetensors: tensor \"{}\" shape {}", name,
                                       shape_str(shape));
  const size_t needed = checked_mul<size_t>(static_cast<size_t>(checked_numel(shape, what)),
                                            st_dtype_size(dtype), what);
  MOE_CHECK(nbytes == needed, "safetensors: tensor \"{}\" {} of {} needs {} bytes, given {}", name,
            shape_str(shape), st_dtype_name(dtype), needed, nbytes);
  Entry e{dtype, shape, std::vector<uint8_t>(nbytes)};
  if (nbytes) std::memcpy(e.bytes.data(), data, nbytes);
  tensors_.emplace(name, std::move(e));
}

void SafeTensorsWriter::add_f32(const std::string& name, const Shape& shape,
                                const std::vector<float>& values) {
  add(name, StDType::kF32, shape, values.data(), values.size() * sizeof(float));
}

void SafeTensorsWriter::add_f64(const std::string& name, const Shape& shape,
                                const std::vector<double>& values) {
  add(name, StDType::kF64, shape, values.data(), values.size() * sizeof(double));
}

void SafeTensorsWriter::add_i32(const std::string& name, const Shape& shape,
                                const std::vector<int32_t>& values) {
  add(name, StDType::kI32, shape, values.data(), values.size() * sizeof(int32_t));
}

void SafeTensorsWriter::write(const std::string& path, bool atomic) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& kv : metadata_) meta[kv.first] = kv.second;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& kv : tensors_) {
    nlohmann::ordered_json t;
    t["dtype"] = st_dtype_name(kv.second.dtype);
    t["shape"] = kv.second.shape;
    t["data_offsets"] = {offset, offset + kv.second.bytes.size()};
    offset += kv.second.bytes.size();
    header[kv.first] = t;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(text.size() >> (8 * i));

  const std::string target = atomic ? path + ".tmp" : path;
  std::FILE* f = std::fopen(target.c_str(), "wb");
  MOE_CHECK(f, "{}: cannot open for writing: {}", target, std::strerror(errno));
  bool ok = std::fwrite(len_bytes, 1, 8, f) == 8 &&
            std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (auto it = tensors_.begin(); ok && it != tensors_.end(); ++it) {
    const auto& b = it->second.bytes;
    ok = b.empty() || std::fwrite(b.data(), 1, b.size(), f) == b.size();
  }
  ok = std::fflush(f) == 0 && ok;
  if (ok && atomic) ok = ::fsync(::fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(target.c_str());
    MOE_FAIL("{}: write failed (disk full?): {}", target, std::strerror(errno));
  }
  if (atomic) {
    MOE_CHECK(std::rename(target.c_str(), path.c_str()) == 0, "cannot rename {} to {}: {}",
              target, path, std::strerror(errno));
  }
}

}  // namespace moe
