// CSV reading on libcsv (see csv_reader.h). libcsv reports fields and row ends through callbacks
// but not where they are in the input, so the data is fed one physical line at a time (each
// piece ends at an LF, a CRLF or a lone CR) and the line counter advances between pieces; a row
// starts on the first non-blank piece after the previous row ended.
#include "eval/csv_reader.h"

#include <csv.h>

#include "core/error.h"
#include "eval/task_files.h"

namespace moe::eval {
namespace {

struct ParseState {
  std::vector<CsvRow> rows;
  std::vector<std::string> fields;
  int64_t row_start = 0;
};

extern "C" void on_field(void* s, size_t len, void* data) {
  auto* st = static_cast<ParseState*>(data);
  st->fields.emplace_back(static_cast<const char*>(s), s ? len : 0);
}

extern "C" void on_row(int /*terminator*/, void* data) {
  auto* st = static_cast<ParseState*>(data);
  st->rows.push_back({st->row_start, std::move(st->fields)});
  st->fields.clear();
  st->row_start = 0;
}

// Nothing is whitespace to libcsv: fields keep their leading and trailing spaces and tabs.
extern "C" int no_space(unsigned char) { return 0; }

}  // namespace

std::vector<CsvRow> parse_csv(const std::string& data, const std::string& path) {
  csv_parser parser;
  MOE_CHECK(csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI) == 0, "{}: cannot initialise libcsv",
            path);
  csv_set_space_func(&parser, no_space);
  ParseState st;
  int64_t line = 1;
  size_t pos = 0;
  auto fail = [&](int64_t at) {
    const std::string why = csv_strerror(csv_error(&parser));
    csv_free(&parser);
    MOE_USAGE_FAIL("{}:{}: malformed CSV ({}; expected RFC 4180: fields separated by ',', quoted "
                   "with '\"', a '\"' inside a quoted field doubled)",
                   path, at, why);
  };
  while (pos < data.size()) {
    size_t end = data.find_first_of("\r\n", pos);
    if (end == std::string::npos) {
      end = data.size();
    } else if (data[end] == '\r' && end + 1 < data.size() && data[end + 1] == '\n') {
      end += 2;
    } else {
      end += 1;
    }
    const bool blank = data.find_first_not_of("\r\n", pos) >= end;
    if (st.row_start == 0 && !blank) st.row_start = line;
    if (csv_parse(&parser, data.data() + pos, end - pos, on_field, on_row, &st) != end - pos) {
      fail(line);
    }
    if (data[end - 1] == '\n' || data[end - 1] == '\r') ++line;
    pos = end;
  }
  if (csv_fini(&parser, on_field, on_row, &st) != 0) fail(st.row_start ? st.row_start : line);
  csv_free(&parser);
  return std::move(st.rows);
}

std::vector<CsvRow> read_csv(const std::string& path) { return parse_csv(read_task_file(path), path); }

}  // namespace moe::eval
