// Python str semantics on UTF-8 strings (see text_utils.h).
#include "eval/text_utils.h"

#include "core/error.h"

namespace moe::eval {

std::u32string utf8_to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    MOE_USAGE_CHECK(len > 0 && i + len <= s.size(), "invalid UTF-8 at byte {} of \"{}\"", i,
                    std::string(s.substr(0, 80)));
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int j = 1; j < len; ++j) {
      const unsigned char cc = static_cast<unsigned char>(s[i + j]);
      MOE_USAGE_CHECK((cc >> 6) == 0x2, "invalid UTF-8 at byte {} of \"{}\"", i + j,
                      std::string(s.substr(0, 80)));
      cp = (cp << 6) | (cc & 0x3F);
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string u32_to_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool is_python_space(char32_t c) {
  // CPython's _PyUnicode_IsWhitespace: the Unicode White_Space property plus the ASCII
  // separators \x1c-\x1f.
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x1C: case 0x1D: case 0x1E:
    case 0x1F: case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

namespace {
std::string strip_impl(std::string_view s, bool left, bool right) {
  const std::u32string u = utf8_to_u32(s);
  size_t b = 0, e = u.size();
  if (left) while (b < e && is_python_space(u[b])) ++b;
  if (right) while (e > b && is_python_space(u[e - 1])) --e;
  return u32_to_utf8(u.substr(b, e - b));
}
char32_t to_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  return c;
}
char32_t to_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  return c;
}
}  // namespace

std::string py_strip(std::string_view s) { return strip_impl(s, true, true); }
std::string py_lstrip(std::string_view s) { return strip_impl(s, true, false); }
std::string py_rstrip(std::string_view s) { return strip_impl(s, false, true); }

std::string py_capitalize(std::string_view s) {
  std::u32string u = utf8_to_u32(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? to_upper(u[i]) : to_lower(u[i]);
  return u32_to_utf8(u);
}

std::string py_lower_first(std::string_view s) {
  std::u32string u = utf8_to_u32(s);
  if (!u.empty()) u[0] = to_lower(u[0]);
  return u32_to_utf8(u);
}

std::vector<std::string> py_split(std::string_view s, std::string_view sep) {
  MOE_CHECK(!sep.empty(), "py_split: empty separator");
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) break;
    out.emplace_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
  out.emplace_back(s.substr(start));
  return out;
}

std::string py_replace(std::string_view s, std::string_view from, std::string_view to) {
  MOE_CHECK(!from.empty(), "py_replace: empty pattern");
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(from, start);
    if (pos == std::string_view::npos) break;
    out.append(s.substr(start, pos - start));
    out.append(to);
    start = pos + from.size();
  }
  out.append(s.substr(start));
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace moe::eval
