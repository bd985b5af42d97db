// Atomic file writes for the data cache: write to "<path>.tmp.<pid>", flush, then rename over
// the destination, so a crash or a concurrent reader never sees a half-written file.
#pragma once
#include <cstdio>
#include <string>
#include <string_view>

namespace moe::data {

// Writes `bytes` to `path` atomically. Runtime error naming the path on failure.
void write_file_atomically(const std::string& path, std::string_view bytes);

// Streams a file under a temporary name; commit() flushes and renames it into place.
// Destroyed without commit(), it removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t bytes);
  void write_at(uint64_t offset, const void* data, size_t bytes);  // overwrite (headers)
  uint64_t bytes_written() const { return written_; }
  void commit();

 private:
  std::string path_, tmp_path_;
  std::FILE* f_ = nullptr;
  uint64_t written_ = 0;
};

}  // namespace moe::data
