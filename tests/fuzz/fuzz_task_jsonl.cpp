// libFuzzer target: the zero-shot task readers of lib/eval (a user task JSONL and every built-in
// format that reads JSON lines), each on the same input file.
#include "eval/task_readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe::eval;
  const std::string path = moe::fuzz::write_scratch("task.jsonl", data, size);
  const std::string labels = moe::fuzz::write_scratch("labels.lst", data, size);
  moe::fuzz::expect_accept_or_error([&] { read_user_task("fuzz", path); });
  moe::fuzz::expect_accept_or_error([&] { read_hellaswag_jsonl(path); });
  moe::fuzz::expect_accept_or_error([&] { read_piqa(path, labels); });
  moe::fuzz::expect_accept_or_error([&] { read_arc("arc_easy", path, "test"); });
  moe::fuzz::expect_accept_or_error([&] { read_openbookqa(path); });
  moe::fuzz::expect_accept_or_error([&] { read_boolq(path); });
  moe::fuzz::expect_accept_or_error([&] { read_lambada(path); });
  moe::fuzz::expect_accept_or_error([&] { read_copa(path); });
  moe::fuzz::expect_accept_or_error([&] { read_winogrande(path); });
  moe::fuzz::expect_accept_or_error([&] { read_sciq(path); });
  return 0;
}
