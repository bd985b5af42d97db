// File helpers of the checkpoint code: synced and atomic writes, whole-file reads, and the
// content hash recorded in checkpoint manifests. The hash is a 64-bit multiply-rotate mix over
// 8-byte words (MurmurHash3's 64-bit block step with its final avalanche): fast enough to hash a
// multi-GB checkpoint at memory speed, and any truncation or changed byte alters it.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "checkpoint/checkpoint.h"

namespace moe {
namespace {

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t fmix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

struct Hasher {
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  uint64_t total = 0;
  void words(const uint8_t* p, size_t n_words) {
    constexpr uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    for (size_t i = 0; i < n_words; ++i) {
      uint64_t k;
      std::memcpy(&k, p + 8 * i, 8);
      k *= c1;
      k = rotl(k, 31);
      k *= c2;
      h ^= k;
      h = rotl(h, 27) * 5 + 0x52dce729;
    }
  }
  uint64_t finish(const uint8_t* tail, size_t n_tail) {
    uint64_t k = 0;
    std::memcpy(&k, tail, n_tail);
    h ^= fmix(k ^ (n_tail * 0x100000001b3ULL));
    return fmix(h ^ total);
  }
};

}  // namespace

uint64_t hash_bytes(const void* data, size_t n) {
  Hasher hs;
  hs.total = n;
  const auto* p = static_cast<const uint8_t*>(data);
  hs.words(p, n / 8);
  return hs.finish(p + (n / 8) * 8, n % 8);
}

void write_file_synced(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MOE_CHECK(fd >= 0, "cannot create '{}': {}", path, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      ::close(fd);
      MOE_FAIL("cannot write '{}': {}", path, std::strerror(err));
    }
    done += static_cast<size_t>(w);
  }
  bool synced = ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  MOE_CHECK(synced, "cannot fsync '{}': {}", path, std::strerror(err));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  try {
    write_file_synced(tmp, bytes);
  } catch (...) {
    std::remove(tmp.c_str());  // never leave a partial temporary behind (a full disk)
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    MOE_FAIL("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(err));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot read '{}'", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Hash of a file's content, streamed in 8 MiB blocks (a multiple of 8 bytes, so the result
// equals hash_bytes of the whole content).
uint64_t hash_file(const std::string& path, uint64_t* size_out) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot read '{}'", path);
  Hasher hs;
  std::vector<uint8_t> buf(8u << 20);
  uint64_t total = 0;
  size_t carry = 0;
  while (in) {
    in.read(reinterpret_cast<char*>(buf.data() + carry),
            static_cast<std::streamsize>(buf.size() - carry));
    size_t got = static_cast<size_t>(in.gcount()) + carry;
    total += static_cast<uint64_t>(in.gcount());
    size_t whole = got / 8;
    hs.words(buf.data(), whole);
    carry = got - whole * 8;
    std::memmove(buf.data(), buf.data() + whole * 8, carry);
  }
  hs.total = total;
  if (size_out) *size_out = total;
  return hs.finish(buf.data(), carry);
}

}  // namespace moe
