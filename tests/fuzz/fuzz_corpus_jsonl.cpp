// libFuzzer target: the training corpus readers of lib/data (a .jsonl file with the text in
// data.jsonl_field, and the same bytes as a plain text file): UTF-8 checks, newline
// normalisation, document splitting.
#include "data/corpus.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe::data;
  for (const char* name : {"corpus.jsonl", "corpus.txt"}) {
    const std::string path = moe::fuzz::write_scratch(name, data, size);
    moe::fuzz::expect_accept_or_error([&] {
      const std::vector<SourceFile> sources = resolve_sources({path}, "data.train");
      size_t bytes = 0;
      for_each_document(sources, "text", [&](Document&& d) {
        if (find_invalid_utf8(d.text) != std::string::npos) {
          moe::fuzz::finding("a corpus document with invalid UTF-8 was accepted");
        }
        bytes += d.text.size();
      });
      (void)bytes;
    });
  }
  return 0;
}
