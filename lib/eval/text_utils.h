// Python-compatible string helpers for the zero-shot prompts. The harness builds prompts with
// Python str methods; these reproduce them on UTF-8 std::string: whitespace is Python's
// str.isspace() set (not C's isspace), lengths are code points (Python len), and capitalize()
// lower-cases everything after the first character, as Python does.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::eval {

std::u32string utf8_to_u32(std::string_view s);  // throws on invalid UTF-8
std::string u32_to_utf8(const std::u32string& s);
int64_t utf8_length(std::string_view s);  // code points (Python len of the str)

bool is_python_space(char32_t c);
std::string py_strip(std::string_view s);
std::string py_lstrip(std::string_view s);
std::string py_rstrip(std::string_view s);
// str.capitalize(): first character upper-cased, the rest lower-cased. Case mapping covers ASCII
// and Latin-1 letters; other code points are left unchanged.
std::string py_capitalize(std::string_view s);
std::string py_lower_first(std::string_view s);  // c[0].lower() + c[1:]
// s.split(sep) with an explicit separator (keeps empty pieces, like Python).
std::vector<std::string> py_split(std::string_view s, std::string_view sep);
// s.replace(from, to): one left-to-right pass over non-overlapping occurrences.
std::string py_replace(std::string_view s, std::string_view from, std::string_view to);
bool ends_with(std::string_view s, std::string_view suffix);
bool starts_with(std::string_view s, std::string_view prefix);

}  // namespace moe::eval
