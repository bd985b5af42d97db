// Task-file reading (see task_files.h). bz2 is decoded with libbz2 in one pass over the file.
#include "eval/task_files.h"

#include <bzlib.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "eval/text_utils.h"

namespace moe::eval {
namespace {

std::string decompress_bz2(const std::string& compressed, const std::string& path) {
  bz_stream strm{};
  MOE_CHECK(BZ2_bzDecompressInit(&strm, 0, 0) == BZ_OK, "{}: cannot initialise bz2", path);
  std::string out;
  std::vector<char> buf(1 << 20);
  strm.next_in = const_cast<char*>(compressed.data());
  strm.avail_in = static_cast<unsigned>(compressed.size());
  int rc = BZ_OK;
  while (rc != BZ_STREAM_END) {
    strm.next_out = buf.data();
    strm.avail_out = static_cast<unsigned>(buf.size());
    rc = BZ2_bzDecompress(&strm);
    if (rc != BZ_OK && rc != BZ_STREAM_END) {
      BZ2_bzDecompressEnd(&strm);
      MOE_USAGE_FAIL("{}: corrupt bz2 data (libbz2 error {}); expected a bzip2 file", path, rc);
    }
    out.append(buf.data(), buf.size() - strm.avail_out);
    if (rc == BZ_OK && strm.avail_in == 0 && strm.avail_out != 0) {
      BZ2_bzDecompressEnd(&strm);
      MOE_USAGE_FAIL("{}: truncated bz2 file (the stream ends early)", path);
    }
  }
  BZ2_bzDecompressEnd(&strm);
  return out;
}

}  // namespace

std::string read_task_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_USAGE_CHECK(in.good(), "task file {} cannot be opened (missing or unreadable)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  if (ends_with(path, ".bz2")) return decompress_bz2(data, path);
  return data;
}

std::vector<std::string> read_task_lines(const std::string& path) {
  const std::string data = read_task_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < data.size()) {
    size_t end = data.find('\n', start);
    if (end == std::string::npos) end = data.size();
    lines.emplace_back(data.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::vector<JsonLine> read_jsonl(const std::string& path) {
  std::vector<JsonLine> out;
  const std::vector<std::string> lines = read_task_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& text = lines[i];
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    JsonLine jl;
    jl.line = static_cast<int64_t>(i) + 1;
    try {
      jl.value = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      MOE_USAGE_FAIL("{}:{}: not valid JSON ({}); expected one JSON object per line", path,
                     jl.line, clip_text(e.what()));
    }
    MOE_USAGE_CHECK(jl.value.is_object(), "{}:{}: expected a JSON object, found {}", path, jl.line,
                    jl.value.type_name());
    out.push_back(std::move(jl));
  }
  MOE_USAGE_CHECK(!out.empty(), "{}: no records (empty file)", path);
  return out;
}

std::string json_string(const nlohmann::json& obj, const std::string& key,
                        const std::string& where) {
  auto it = obj.find(key);
  MOE_USAGE_CHECK(it != obj.end(), "{}: missing field '{}'", where, key);
  MOE_USAGE_CHECK(it->is_string(), "{}: field '{}' should be a string, found {}", where, key,
                  it->type_name());
  return it->get<std::string>();
}

int64_t json_int(const nlohmann::json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  MOE_USAGE_CHECK(it != obj.end(), "{}: missing field '{}'", where, key);
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    try {
      size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used == s.size()) return v;
    } catch (const std::exception&) {
    }
  }
  MOE_USAGE_FAIL("{}: field '{}' should be an integer, found {}", where, key, clip_text(it->dump()));
}

std::vector<std::string> json_string_array(const nlohmann::json& obj, const std::string& key,
                                           const std::string& where) {
  auto it = obj.find(key);
  MOE_USAGE_CHECK(it != obj.end(), "{}: missing field '{}'", where, key);
  MOE_USAGE_CHECK(it->is_array(), "{}: field '{}' should be a list of strings, found {}", where,
                  key, it->type_name());
  std::vector<std::string> out;
  for (const auto& v : *it) {
    MOE_USAGE_CHECK(v.is_string(), "{}: field '{}' should hold only strings, found {}", where,
                    key, clip_text(v.dump()));
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace moe::eval
