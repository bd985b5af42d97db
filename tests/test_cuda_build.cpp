// Host-side checks of the CUDA backend that run on any machine (ctest label cpu): asking for a
// CUDA device where there is none, or in a build without the CUDA backend, is a clear moe::Error
// (a usage error, exit code 2) that names the device, never a crash.
#include <algorithm>
#include <string>

#include <gtest/gtest.h>

#include "backend/backend.h"

namespace moe {
namespace {

bool has_cuda() {
  auto b = available_backends();
  return std::find(b.begin(), b.end(), "cuda") != b.end();
}

TEST(CudaBuild, CpuIsAlwaysAvailable) {
  auto b = available_backends();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), "cpu");
}

TEST(CudaBuild, MissingDeviceIsAClearUsageError) {
  if (has_cuda()) GTEST_SKIP() << "a CUDA device is present: this test covers machines without one";
  for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
    try {
      auto backend = make_backend(spec);
      ADD_FAILURE() << "make_backend(\"" << spec << "\") returned a backend without a device";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << msg;
      EXPECT_EQ(e.exit_code(), 2) << msg;
      EXPECT_NE(msg.find(spec), std::string::npos) << "message should name the device: " << msg;
      const bool explains = msg.find("no CUDA device") != std::string::npos ||
                            msg.find("no CUDA backend") != std::string::npos;
      EXPECT_TRUE(explains) << "message should say why: " << msg;
    }
  }
}

TEST(CudaBuild, DeviceIndexOutOfRangeIsAnError) {
  // With or without a device, an absurd index is refused with a moe::Error.
  EXPECT_THROW(make_backend("cuda:4096"), Error);
}

TEST(CudaBuild, UnknownDeviceNameIsAnError) {
  try {
    make_backend("gpu");
    ADD_FAILURE() << "make_backend(\"gpu\") should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'cpu', 'cuda' or 'cuda:N'"), std::string::npos)
        << e.what();
  }
}

TEST(CudaBuild, AvailableBackendsIsStable) {
  // cuda_device_count() must not throw or leave a sticky error behind: asking twice agrees.
  EXPECT_EQ(available_backends(), available_backends());
}

}  // namespace
}  // namespace moe
