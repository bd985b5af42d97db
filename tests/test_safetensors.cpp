// safetensors I/O: byte-exact layout of a written file, round trips of every dtype we convert,
// and a clear moe::Error (naming the file and the problem) for each kind of corrupt file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "support/paths.h"

namespace moe {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file with the given JSON header (unpadded) and data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// Expects constructing a reader on `bytes` to fail with a message containing every fragment.
void expect_corrupt(const std::string& bytes, const std::vector<std::string>& fragments) {
  const std::string path = test::make_temp_dir("st_bad") + "/bad.safetensors";
  write_all(path, bytes);
  try {
    SafeTensorsReader r(path);
    ADD_FAILURE() << "no error for a corrupt file; expected: " << fragments[0];
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg;
  }
}

TEST(SafeTensors, WriterLayoutIsByteExact) {
  SafeTensorsWriter w;
  w.add_f32("b", {2}, {1.0f, -2.0f});
  w.add_i32("a", {1, 1}, {7});
  w.set_metadata("format", "pt");
  const std::string path = test::make_temp_dir("st_layout") + "/x.safetensors";
  w.write(path);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I32","shape":[1,1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  std::string data(12, '\0');
  int32_t seven = 7;
  float vals[2] = {1.0f, -2.0f};
  std::memcpy(&data[0], &seven, 4);
  std::memcpy(&data[4], vals, 8);
  EXPECT_EQ(read_all(path), make_file(padded, data));
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());  // the temporary was renamed away
}

TEST(SafeTensors, RoundTripAllDtypesAndMetadata) {
  SafeTensorsWriter w;
  w.add_f32("f32", {2, 3}, {1, 2, 3, 4, 5, -6.5f});
  w.add_f64("f64", {3}, {0.1, -1e300, 3.0});
  std::vector<uint16_t> bf = {f32_to_bf16(1.5f), f32_to_bf16(-0.25f)};
  w.add("bf16", StDType::kBF16, {2}, bf.data(), 4);
  std::vector<int64_t> i64 = {-3, 1LL << 40};
  w.add("i64", StDType::kI64, {2}, i64.data(), 16);
  w.add_i32("i32", {0}, {});
  w.set_metadata("step", "3");
  const std::string path = test::make_temp_dir("st_rt") + "/rt.safetensors";
  w.write(path, /*atomic=*/false);

  SafeTensorsReader r(path);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"bf16", "f32", "f64", "i32", "i64"}));
  EXPECT_EQ(r.metadata().at("step"), "3");
  EXPECT_EQ(r.shape("f32"), (Shape{2, 3}));
  EXPECT_EQ(r.to_f32("f32"), (std::vector<float>{1, 2, 3, 4, 5, -6.5f}));
  EXPECT_EQ(r.to_f64("f64"), (std::vector<double>{0.1, -1e300, 3.0}));
  EXPECT_EQ(r.to_f32("bf16"), (std::vector<float>{1.5f, -0.25f}));
  EXPECT_EQ(r.to_f64("f32")[5], -6.5);
  EXPECT_TRUE(r.to_i32("i32").empty());
  EXPECT_EQ(r.info("i64").dtype, StDType::kI64);
  EXPECT_THROW(r.to_i32("i64"), Error);  // 2^40 does not fit
  EXPECT_THROW(r.to_f32("i64"), Error);  // integer tensor read as float
  size_t n = 0;
  const uint8_t* p = r.raw("f64", &n);
  EXPECT_EQ(n, 24u);
  double first;
  std::memcpy(&first, p, 8);
  EXPECT_EQ(first, 0.1);
  try {
    r.info("missing");
    ADD_FAILURE() << "missing tensor not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}

TEST(SafeTensors, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly half way between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
}

TEST(SafeTensors, TruncatedFileIsAClearError) {
  SafeTensorsWriter w;
  w.add_f32("weight", {4, 4}, std::vector<float>(16, 1.0f));
  const std::string path = test::make_temp_dir("st_trunc") + "/t.safetensors";
  w.write(path);
  const std::string full = read_all(path);
  expect_corrupt(full.substr(0, full.size() - 1), {"weight", "truncated"});
  expect_corrupt(full.substr(0, 20), {"header length"});
  expect_corrupt(full.substr(0, 5), {"truncated"});
  expect_corrupt("", {"truncated"});
}

TEST(SafeTensors, CorruptHeadersAreClearErrors) {
  const std::string d8(8, '\0');
  expect_corrupt(make_file("{not json", d8), {"not valid JSON"});
  expect_corrupt(make_file("[1,2]", d8), {"JSON object"});
  expect_corrupt(make_file(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", d8),
                 {"\"w\"", "Q7"});
  expect_corrupt(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8),
                 {"\"w\"", "needs 12"});
  expect_corrupt(make_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8),
                 {"non-negative"});
  expect_corrupt(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8),
                 {"reversed"});
  expect_corrupt(make_file(R"({"w":{"dtype":"F32","shape":[2]}})", d8), {"data_offsets"});
  expect_corrupt(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8),
                 {"overlap"});
  expect_corrupt(make_file(R"({"__metadata__":{"k":1}})", ""), {"__metadata__"});
  // A number beyond double: nlohmann's out_of_range, which the parse_error handler missed.
  expect_corrupt(make_file(R"({"w":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})", d8),
                 {"not valid JSON"});
}

// Issue 11, item 5: shape products are exact. [2^31, 2^31] F32 is 2^62 elements, 2^64 bytes:
// wrapped modulo 2^64 that is 0 bytes, which matched data_offsets [0, 0] and passed the size
// check. Such a header is now a usage error (exit 2) naming the tensor, as is an element count
// past int64.
TEST(SafeTensors, ShapesWhoseSizeOverflowsAreRefused) {
  const std::string d8(8, '\0');
  for (const char* header :
       {R"({"wrap":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})",
        R"({"wrap":{"dtype":"U8","shape":[268435456,268435456,268435456],"data_offsets":[0,0]}})",
        R"({"wrap":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})"}) {
    const std::string path = test::make_temp_dir("st_wrap") + "/wrap.safetensors";
    write_all(path, make_file(header, d8));
    try {
      SafeTensorsReader r(path);
      ADD_FAILURE() << "accepted: " << header;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << e.what();
      EXPECT_NE(std::string(e.what()).find("\"wrap\""), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
    }
  }
}

TEST(SafeTensors, MissingFileNamesThePath) {
  try {
    SafeTensorsReader r("/nonexistent/dir/model.safetensors");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.safetensors"), std::string::npos);
  }
}

}  // namespace
}  // namespace moe
