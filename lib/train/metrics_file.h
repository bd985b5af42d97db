// metrics.jsonl as an append-only file whose every failed write is detected (a full disk, a
// quota, an I/O error): each record is one write(2) of a whole line; a failure cuts the file back
// to its last complete record, keeps the records not written, and remembers the error, which the
// trainer acts on at the step boundary (docs/reliability.md, "A full disk").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

class MetricsFile {
 public:
  MetricsFile() = default;
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  // Opens path for appending (creating it). Runtime error naming the path when it cannot.
  void open(const std::string& path);
  // Appends line + "\n". After a failure, lines are only queued until retry_pending().
  void append(const std::string& line);
  // Writes the queued lines again; true when all of them are now in the file.
  bool retry_pending();
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }  // the first failure, or ""
  const std::string& path() const { return path_; }

 private:
  bool write_line(const std::string& text);  // whole line or nothing (cut back on failure)

  std::string path_;
  int fd_ = -1;
  int64_t good_size_ = 0;  // bytes of complete records
  std::vector<std::string> pending_;
  std::string error_;
};

}  // namespace moe
