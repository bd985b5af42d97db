// Reading a text corpus into documents.
//
// A corpus is a list of path specs (DataConfig::train / ::valid). Each spec is
//   - a regular file,
//   - a directory: every regular file below it, recursively, sorted by path; names starting
//     with '.' (files or folders) are skipped so editor and VCS droppings never become text,
//   - or a glob(3) pattern (any spec holding '*', '?' or '['), sorted as glob(3) sorts.
// Specs expand in the order given, so the document order is deterministic.
//
// Documents: a plain file is one document; a .jsonl / .json-lines file holds one JSON object per
// line and each record's string field `jsonl_field` is one document (blank lines are allowed).
// Text is normalised: a leading UTF-8 byte-order mark is dropped, CRLF and lone CR become LF.
// Bytes of a plain text file that are not valid UTF-8 are read as Latin-1 characters (byte b
// becomes U+00b), with one warning per file naming it, the count and the first byte offset:
// older corpora (several Gutenberg and State-of-the-Union files in data/corpora) are Latin-1 in
// places, this reading is lossless and right for them, and bits per byte then counts the UTF-8
// bytes of the repaired text. JSON is UTF-8 by definition, so in a JSONL file invalid UTF-8 is
// an error naming the file, line and byte offset. Empty documents (no bytes after
// normalisation) are skipped: they carry no text and would only add a lone eos to the stream.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace moe::data {

struct SourceFile {
  std::string path;
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;
  bool is_jsonl = false;  // .jsonl or .json-lines
};

// Expands the specs in order. `config_key` (e.g. "data.train") names the setting in errors.
// A path that does not exist or a glob with no match is a usage error naming it.
std::vector<SourceFile> resolve_sources(const std::vector<std::string>& specs,
                                        const std::string& config_key);

// One document: normalised, valid UTF-8, non-empty.
struct Document {
  std::string text;
  std::string origin;  // "file" or "file:line" (JSONL), for messages
};

// Calls `fn` for every document of every source, in order. Errors (unreadable file, invalid
// UTF-8, invalid JSON, missing or non-string field) are usage errors naming file, line, offset.
void for_each_document(const std::vector<SourceFile>& sources, const std::string& jsonl_field,
                       const std::function<void(Document&&)>& fn);

// Same, collecting every document (small corpora, tests).
std::vector<Document> read_documents(const std::vector<SourceFile>& sources,
                                     const std::string& jsonl_field);

// CRLF and lone CR -> LF.
std::string normalize_newlines(std::string_view text);

// Copies `text`, turning each byte that is not part of well-formed UTF-8 into the UTF-8 of the
// Latin-1 character with that code (U+0080..U+00FF); counts them in *n_repaired.
std::string repair_utf8_as_latin1(std::string_view text, size_t* n_repaired);

// Offset of the first byte that is not part of a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF are ill-formed), or std::string::npos.
size_t find_invalid_utf8(std::string_view text);

}  // namespace moe::data
