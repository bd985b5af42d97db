// libFuzzer target: the safetensors reader (lib/io/safetensors.cpp): the 8-byte header length,
// the JSON header (dtypes, shapes, data_offsets, overlaps, metadata) and the conversion of every
// tensor it accepts to f32 and f64.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = moe::fuzz::write_scratch("fuzz.safetensors", data, size);
  moe::fuzz::expect_accept_or_error([&] {
    moe::SafeTensorsReader reader(path);
    for (const std::string& name : reader.names()) {
      const moe::SafeTensorInfo& info = reader.info(name);
      size_t nbytes = 0;
      const uint8_t* raw = reader.raw(name, &nbytes);
      if (nbytes != info.end - info.begin) moe::fuzz::finding("raw() size disagrees with info");
      volatile uint8_t sink = 0;
      for (size_t i = 0; i < nbytes; ++i) sink = sink ^ raw[i];  // every byte must be readable
      (void)sink;
      moe::fuzz::expect_accept_or_error([&] { reader.to_dtype(name, moe::DType::kF32); });
      moe::fuzz::expect_accept_or_error([&] { reader.to_dtype(name, moe::DType::kF64); });
    }
  });
  return 0;
}
