// MetricsFile (see metrics_file.h).
#include "train/metrics_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace moe {

MetricsFile::~MetricsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsFile::open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  MOE_CHECK(fd_ >= 0, "cannot open '{}' for writing: {}", path, std::strerror(errno));
  struct stat st {};
  MOE_CHECK(::fstat(fd_, &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  good_size_ = static_cast<int64_t>(st.st_size);
}

bool MetricsFile::write_line(const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd_, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : ENOSPC;
      if (error_.empty()) {
        error_ = fmt::format("cannot write '{}': {}", path_, std::strerror(err));
      }
      // Drop the part of the line that made it, so the file ends with a complete record.
      if (::ftruncate(fd_, good_size_) != 0) {
        error_ += fmt::format(" (and cannot cut it back to its last complete record: {})",
                              std::strerror(errno));
      }
      return false;
    }
    done += static_cast<size_t>(w);
  }
  good_size_ += static_cast<int64_t>(text.size());
  return true;
}

void MetricsFile::append(const std::string& line) {
  MOE_CHECK(fd_ >= 0, "internal: metrics file not open");
  if (!pending_.empty() || !write_line(line + "\n")) pending_.push_back(line + "\n");
}

bool MetricsFile::retry_pending() {
  while (!pending_.empty()) {
    if (!write_line(pending_.front())) return false;
    pending_.erase(pending_.begin());
  }
  return true;
}

}  // namespace moe
