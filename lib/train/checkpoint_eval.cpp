// load_checkpoint_for_eval: a checkpoint's config, model and tokenizer for moeeval / moeinfer.
// (Kept apart from checkpoint.cpp so that code which only handles checkpoint files does not link
// the model.)
#include <filesystem>

#include "model/weights_io.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace moe {

LoadedCheckpoint load_checkpoint_for_eval(const std::string& dir, Backend& backend,
                                          int64_t max_batch, int64_t seq) {
  MOE_USAGE_CHECK(fs::is_directory(dir), "checkpoint '{}' does not exist", dir);
  LoadedCheckpoint out;
  out.dir = dir;
  for (const char* f : {"config.yaml", "model.safetensors", "tokenizer.model"}) {
    MOE_USAGE_CHECK(fs::exists(fs::path(dir) / f), "checkpoint '{}' has no {} (expected a "
                    "directory written by moetrain: checkpoints/step_XXXXXXXX)", dir, f);
  }
  if (fs::exists(fs::path(dir) / "manifest.json")) verify_checkpoint(dir);
  out.config = load_checkpoint_config(dir);
  MOE_CHECK(out.config.model.vocab_size > 0, "checkpoint '{}': config.yaml has no model."
            "vocab_size", dir);
  if (fs::exists(fs::path(dir) / "trainer_state.json")) out.step = load_trainer_state(dir).step;
  // bf16 runs evaluate in bf16 on CUDA too; the CPU backend computes in f32.
  const DType compute = out.config.train.dtype == "bf16" && backend.device() == Device::kCuda
                            ? DType::kBF16
                            : DType::kF32;
  out.model = std::make_unique<MoeModel>(out.config.model, out.config.loss, backend, max_batch,
                                         seq, compute);
  load_weights(*out.model, (fs::path(dir) / "model.safetensors").string());
  out.tokenizer_path = (fs::path(dir) / "tokenizer.model").string();
  return out;
}

}  // namespace moe
