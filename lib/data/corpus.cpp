// Corpus reading: path specs -> source files -> normalised UTF-8 documents. See corpus.h.
#include "data/corpus.h"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.h"

namespace fs = std::filesystem;

namespace moe::data {
namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_glob_pattern(const std::string& spec) {
  return spec.find_first_of("*?[") != std::string::npos;
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

SourceFile describe_file(const fs::path& path) {
  SourceFile f;
  f.path = path.string();
  std::error_code ec;
  f.size_bytes = fs::file_size(path, ec);
  MOE_USAGE_CHECK(!ec, "cannot read the size of {}: {}", f.path, ec.message());
  struct stat st {};
  MOE_USAGE_CHECK(::stat(f.path.c_str(), &st) == 0, "cannot stat {}: {}", f.path,
                  std::strerror(errno));
  // Unix-epoch nanoseconds (std::filesystem's file_clock epoch is implementation-defined).
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  f.is_jsonl = has_suffix(f.path, ".jsonl") || has_suffix(f.path, ".json-lines");
  return f;
}

// Every regular file below `dir` (hidden names skipped), sorted by path.
std::vector<fs::path> list_directory(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  MOE_USAGE_CHECK(!ec, "cannot list directory {}: {}", dir.string(), ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    MOE_USAGE_CHECK(!ec, "cannot list directory {}: {}", dir.string(), ec.message());
    if (is_hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<fs::path> expand_glob(const std::string& pattern, const std::string& config_key) {
  glob_t g{};
  const int rc = glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<fs::path> out;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  MOE_USAGE_CHECK(rc != GLOB_NOSPACE && rc != GLOB_ABORTED, "{}: cannot expand glob '{}'",
                  config_key, pattern);
  MOE_USAGE_CHECK(!out.empty(), "{}: the glob '{}' matches no file", config_key, pattern);
  return out;  // glob(3) returns the matches sorted
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "cannot open corpus file {}", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  MOE_USAGE_CHECK(!in.bad(), "error while reading corpus file {}", path);
  return ss.str();
}

void strip_bom(std::string& text) {
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
}

void check_utf8(std::string_view text, const std::string& where, size_t base_offset) {
  const size_t bad = find_invalid_utf8(text);
  MOE_USAGE_CHECK(bad == std::string::npos,
                  "{}: invalid UTF-8 at byte offset {} (byte 0x{:02X}); the corpus must be UTF-8 "
                  "text (convert it, e.g. with iconv)",
                  where, base_offset + bad, static_cast<unsigned char>(text[bad]));
}

// Logs the Latin-1 repair of a file once per process (the corpus is read several times).
void warn_repaired_once(const std::string& path, size_t n_bytes, size_t first_offset) {
  static std::mutex mu;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (!warned.insert(path).second) return;
  spdlog::warn("{}: {} byte(s) are not UTF-8 (the first at byte offset {}); read them as "
               "Latin-1 characters", path, n_bytes, first_offset);
}

void read_text_file(const SourceFile& src, const std::function<void(Document&&)>& fn) {
  std::string raw = read_whole_file(src.path);
  const size_t first_bad = find_invalid_utf8(raw);
  if (first_bad != std::string::npos) {
    size_t n_bad = 0;
    raw = repair_utf8_as_latin1(raw, &n_bad);
    warn_repaired_once(src.path, n_bad, first_bad);
  }
  strip_bom(raw);
  Document doc{normalize_newlines(raw), src.path};
  if (!doc.text.empty()) fn(std::move(doc));
}

void read_jsonl_file(const SourceFile& src, const std::string& field,
                     const std::function<void(Document&&)>& fn) {
  std::ifstream in(src.path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "cannot open corpus file {}", src.path);
  std::string line;
  size_t line_no = 0, offset = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string where = fmt::format("{}:{}", src.path, line_no);
    check_utf8(line, where, offset);
    offset += line.size() + 1;
    if (line_no == 1) strip_bom(line);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      // parse_error, or out_of_range for a number beyond double (found by fuzz_corpus_jsonl)
      MOE_USAGE_FAIL("{}: invalid JSON ({})", where, clip_text(e.what()));
    }
    MOE_USAGE_CHECK(record.is_object(), "{}: expected a JSON object per line, found a {}", where,
                    record.type_name());
    auto it = record.find(field);
    MOE_USAGE_CHECK(it != record.end(), "{}: the record has no field '{}' (data.jsonl_field)",
                    where, field);
    MOE_USAGE_CHECK(it->is_string(), "{}: field '{}' must be a string, found a {}", where, field,
                    it->type_name());
    Document doc{normalize_newlines(it->get_ref<const std::string&>()), where};
    check_utf8(doc.text, where + " field '" + field + "'", 0);
    if (!doc.text.empty()) fn(std::move(doc));
  }
  MOE_USAGE_CHECK(!in.bad(), "error while reading corpus file {}", src.path);
}

}  // namespace

std::vector<SourceFile> resolve_sources(const std::vector<std::string>& specs,
                                        const std::string& config_key) {
  std::vector<SourceFile> out;
  for (const std::string& spec : specs) {
    MOE_USAGE_CHECK(!spec.empty(), "{}: empty path", config_key);
    std::vector<fs::path> files;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
      files = list_directory(spec);
      MOE_USAGE_CHECK(!files.empty(), "{}: directory {} holds no file", config_key, spec);
    } else if (fs::exists(spec, ec)) {
      MOE_USAGE_CHECK(fs::is_regular_file(spec, ec), "{}: {} is not a regular file", config_key,
                      spec);
      files.emplace_back(spec);
    } else if (is_glob_pattern(spec)) {
      for (const fs::path& p : expand_glob(spec, config_key)) {
        if (fs::is_directory(p, ec)) {
          for (const fs::path& f : list_directory(p)) files.push_back(f);
        } else if (fs::is_regular_file(p, ec)) {
          files.push_back(p);
        }
      }
      MOE_USAGE_CHECK(!files.empty(), "{}: the glob '{}' matches no regular file", config_key,
                      spec);
    } else {
      MOE_USAGE_FAIL("{}: no such file or directory: {}", config_key, spec);
    }
    for (const fs::path& f : files) out.push_back(describe_file(f));
  }
  return out;
}

void for_each_document(const std::vector<SourceFile>& sources, const std::string& jsonl_field,
                       const std::function<void(Document&&)>& fn) {
  for (const SourceFile& src : sources) {
    if (src.is_jsonl) {
      read_jsonl_file(src, jsonl_field, fn);
    } else {
      read_text_file(src, fn);
    }
  }
}

std::vector<Document> read_documents(const std::vector<SourceFile>& sources,
                                     const std::string& jsonl_field) {
  std::vector<Document> docs;
  for_each_document(sources, jsonl_field, [&](Document&& d) { docs.push_back(std::move(d)); });
  return docs;
}

std::string normalize_newlines(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r') {
      out.push_back('\n');
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;  // CRLF -> LF
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string repair_utf8_as_latin1(std::string_view text, size_t* n_repaired) {
  std::string out;
  out.reserve(text.size() + 16);
  size_t n = 0;
  while (!text.empty()) {
    const size_t bad = find_invalid_utf8(text);
    if (bad == std::string::npos) {
      out.append(text);
      break;
    }
    out.append(text.substr(0, bad));
    const auto b = static_cast<unsigned char>(text[bad]);  // >= 0x80: ASCII is always valid
    out.push_back(static_cast<char>(0xC0 | (b >> 6)));
    out.push_back(static_cast<char>(0x80 | (b & 0x3F)));
    ++n;
    text.remove_prefix(bad + 1);
  }
  if (n_repaired != nullptr) *n_repaired = n;
  return out;
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string::npos;
}

}  // namespace moe::data
