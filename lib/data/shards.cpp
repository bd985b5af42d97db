// Token shard files: header, writer (buffered, atomic) and mmap reader. See shards.h.
#include "data/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/checked.h"
#include "core/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "shards are little-endian files read by memory mapping");

namespace moe::data {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'O', 'K', 'S', '\0'};
constexpr size_t kWriteBufferBytes = 1 << 20;

}  // namespace

uint32_t token_width_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

ShardHeader read_shard_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "cannot open token shard {}", path);
  ShardHeader h{};
  in.read(reinterpret_cast<char*>(&h), sizeof(h));
  MOE_USAGE_CHECK(in.gcount() == static_cast<std::streamsize>(sizeof(h)),
                  "token shard {} is shorter than its 64-byte header", path);
  MOE_USAGE_CHECK(std::memcmp(h.magic, kMagic, sizeof(kMagic)) == 0,
                  "{} is not a moe-spec token shard (bad magic)", path);
  MOE_USAGE_CHECK(h.version == kShardVersion, "token shard {} has format version {}, expected {}",
                  path, h.version, kShardVersion);
  MOE_USAGE_CHECK(h.token_width == token_width_for_vocab(static_cast<int64_t>(h.vocab_size)),
                  "token shard {}: {} bytes per token does not fit vocab size {}", path,
                  h.token_width, h.vocab_size);
  in.seekg(0, std::ios::end);
  const uint64_t file_bytes = static_cast<uint64_t>(in.tellg());
  // Exact: a forged token_count whose byte count wraps modulo 2^64 would otherwise match a file
  // holding only the header. The count must also fit the int64 positions the loader uses.
  const std::string what = fmt::format("token shard {}: header token_count {}", path,
                                       h.token_count);
  checked_cast<int64_t>(h.token_count, what);
  const uint64_t expected = checked_add<uint64_t>(
      sizeof(h), checked_mul<uint64_t>(h.token_count, h.token_width, what), what);
  MOE_USAGE_CHECK(file_bytes == expected,
                  "token shard {} is {} bytes, its header says {} (truncated or corrupt)", path,
                  file_bytes, expected);
  return h;
}

void check_shard_matches(const ShardHeader& h, const std::string& path, uint64_t fingerprint,
                         int64_t vocab_size) {
  MOE_USAGE_CHECK(h.fingerprint == fingerprint,
                  "token shard {} was made with another tokenizer: expected fingerprint {:016x}, "
                  "found {:016x} (delete the cache or point data.cache_dir elsewhere)",
                  path, fingerprint, h.fingerprint);
  MOE_USAGE_CHECK(static_cast<int64_t>(h.vocab_size) == vocab_size,
                  "token shard {}: expected vocab size {}, found {}", path, vocab_size,
                  h.vocab_size);
}

ShardWriter::ShardWriter(const std::string& path, uint64_t fingerprint, int64_t vocab_size)
    : file_(path), path_(path), fingerprint_(fingerprint), vocab_size_(vocab_size),
      width_(token_width_for_vocab(vocab_size)) {
  ShardHeader placeholder{};
  file_.write(&placeholder, sizeof(placeholder));
  buf_.reserve(kWriteBufferBytes + 8);
}

void ShardWriter::append(const int32_t* tokens, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = tokens[i];
    MOE_CHECK(t >= 0 && t < vocab_size_, "token {} outside the vocabulary [0, {}) writing {}", t,
              vocab_size_, path_);
    const uint32_t v = static_cast<uint32_t>(t);
    const size_t at = buf_.size();
    buf_.resize(at + width_);
    std::memcpy(buf_.data() + at, &v, width_);  // little-endian: the low bytes come first
    if (buf_.size() >= kWriteBufferBytes) {
      file_.write(buf_.data(), buf_.size());
      buf_.clear();
    }
  }
  tokens_ += n;
}

ShardHeader ShardWriter::finish() {
  file_.write(buf_.data(), buf_.size());
  buf_.clear();
  ShardHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kShardVersion;
  h.token_width = width_;
  h.fingerprint = fingerprint_;
  h.vocab_size = static_cast<uint64_t>(vocab_size_);
  h.token_count = tokens_;
  h.text_bytes = text_bytes_;
  h.doc_count = docs_;
  file_.write_at(0, &h, sizeof(h));
  file_.commit();
  return h;
}

struct TokenShard::Mapping {
  void* addr = nullptr;
  size_t length = 0;
  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) munmap(addr, length);
  }
};

TokenShard TokenShard::open(const std::string& path, uint64_t fingerprint, int64_t vocab_size) {
  TokenShard s;
  s.header_ = read_shard_header(path);
  check_shard_matches(s.header_, path, fingerprint, vocab_size);
  s.path_ = path;
  s.map_ = std::make_shared<Mapping>();
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOE_USAGE_CHECK(fd >= 0, "cannot open token shard {}: {}", path, std::strerror(errno));
  s.map_->length = sizeof(ShardHeader) + s.header_.token_count * s.header_.token_width;
  s.map_->addr = mmap(nullptr, s.map_->length, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  MOE_CHECK(s.map_->addr != MAP_FAILED, "cannot memory-map token shard {}: {}", path,
            std::strerror(err));
  s.tokens_ = static_cast<const uint8_t*>(s.map_->addr) + sizeof(ShardHeader);
  return s;
}

int32_t TokenShard::at(int64_t i) const {
  MOE_CHECK(i >= 0 && i < size(), "token index {} outside shard {} of {} tokens", i, path_,
            size());
  uint32_t v = 0;
  std::memcpy(&v, tokens_ + static_cast<size_t>(i) * header_.token_width, header_.token_width);
  return static_cast<int32_t>(v);
}

void TokenShard::copy(int64_t start, int64_t n, int32_t* out) const {
  MOE_CHECK(start >= 0 && n >= 0 && start + n <= size(),
            "token range [{}, {}) outside shard {} of {} tokens", start, start + n, path_, size());
  if (header_.token_width == 2) {
    const uint8_t* p = tokens_ + static_cast<size_t>(start) * 2;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      out[i] = v;
    }
  } else {
    std::memcpy(out, tokens_ + static_cast<size_t>(start) * 4, static_cast<size_t>(n) * 4);
  }
}

}  // namespace moe::data
