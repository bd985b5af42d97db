// Reading task files line by line with errors that name the file and line: plain text, .bz2
// (HellaSwag ships compressed), and JSON Lines.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::eval {

// The whole file; a .bz2 file is decompressed. Missing or unreadable: usage error naming it.
std::string read_task_file(const std::string& path);
// The file's lines without their '\n' (a trailing '\r' is kept: callers decide).
std::vector<std::string> read_task_lines(const std::string& path);

struct JsonLine {
  int64_t line = 0;  // 1-based line number in the file
  nlohmann::json value;
};
// Every non-blank line parsed as a JSON object; a parse error names file:line.
std::vector<JsonLine> read_jsonl(const std::string& path);

// Typed field access with "file:line: field 'x' ..." errors.
std::string json_string(const nlohmann::json& obj, const std::string& key, const std::string& where);
int64_t json_int(const nlohmann::json& obj, const std::string& key, const std::string& where);
std::vector<std::string> json_string_array(const nlohmann::json& obj, const std::string& key,
                                           const std::string& where);

}  // namespace moe::eval
