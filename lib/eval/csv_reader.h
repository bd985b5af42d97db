// Reading RFC 4180 CSV files (MMLU's original layout) with libcsv, the kept C parser Debian
// ships as libcsv-dev: quoted fields may hold separators, "" escapes and line breaks (LF, CRLF or
// a lone CR, kept byte for byte); rows end at LF, CRLF or CR, so a file may mix them; the last
// row needs no final newline; whitespace is never trimmed (libcsv trims spaces around unquoted
// fields by default, which Python's csv module does not, so that is switched off); blank lines
// are skipped. Strict mode: a quote inside an unquoted field, text after a closing quote or an
// unterminated quoted field is an error naming file:line, not a guess.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe::eval {

struct CsvRow {
  int64_t line = 0;  // 1-based line on which the row starts
  std::vector<std::string> fields;
};

// Parses `data` (the bytes of `path`, used only in error messages).
std::vector<CsvRow> parse_csv(const std::string& data, const std::string& path);
// Reads and parses a file; a missing file is a usage error naming it.
std::vector<CsvRow> read_csv(const std::string& path);

}  // namespace moe::eval
