// Atomic file writes (temp + rename). See atomic_file.h.
#include "data/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace moe::data {

void write_file_atomically(const std::string& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp." + std::to_string(getpid())) {
  f_ = std::fopen(tmp_path_.c_str(), "wb");
  MOE_CHECK(f_ != nullptr, "cannot create {}: {}", tmp_path_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (f_ != nullptr) {
    std::fclose(f_);
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
  }
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  MOE_CHECK(f_ != nullptr, "write to {} after commit", path_);
  if (bytes == 0) return;
  MOE_CHECK(std::fwrite(data, 1, bytes, f_) == bytes, "cannot write {}: {}", tmp_path_,
            std::strerror(errno));
  written_ += bytes;
}

void AtomicFileWriter::write_at(uint64_t offset, const void* data, size_t bytes) {
  MOE_CHECK(f_ != nullptr, "write to {} after commit", path_);
  MOE_CHECK(offset + bytes <= written_, "write_at beyond the end of {}", tmp_path_);
  MOE_CHECK(std::fseek(f_, static_cast<long>(offset), SEEK_SET) == 0 &&
                std::fwrite(data, 1, bytes, f_) == bytes &&
                std::fseek(f_, 0, SEEK_END) == 0,
            "cannot write {}: {}", tmp_path_, std::strerror(errno));
}

void AtomicFileWriter::commit() {
  MOE_CHECK(f_ != nullptr, "{} committed twice", path_);
  const bool ok = std::fflush(f_) == 0 && fsync(fileno(f_)) == 0;
  const int err = errno;
  std::fclose(f_);
  f_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(ok ? errno : err);
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
    MOE_FAIL("cannot write {}: {}", path_, why);
  }
}

}  // namespace moe::data
