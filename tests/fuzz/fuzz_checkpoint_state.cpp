// libFuzzer target: the checkpoint files a resume reads before any weights: manifest.json
// (verify_checkpoint: the listed files, sizes and hashes) and trainer_state.json
// (load_trainer_state, then the data loader's state inside it). The input is written as both
// files of one scratch checkpoint directory whose other files are small fixed stand-ins.
#include "data/loader.h"
#include "fuzz_util.h"
#include "checkpoint/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const auto d = moe::fuzz::scratch_dir() / "step_00000001";
    std::filesystem::create_directories(d);
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "config.yaml",
                          "tokenizer.model"}) {
      std::ofstream(d / f) << f;
    }
    return d.string();
  }();
  moe::fuzz::write_scratch("step_00000001/manifest.json", data, size);
  moe::fuzz::write_scratch("step_00000001/trainer_state.json", data, size);
  moe::fuzz::expect_accept_or_error([&] { moe::verify_checkpoint(dir); });
  moe::fuzz::expect_accept_or_error([&] {
    const moe::TrainerState s = moe::load_trainer_state(dir);
    const moe::data::LoaderState ls = moe::data::LoaderState::from_json(s.data_state);
    (void)ls;
  });
  return 0;
}
