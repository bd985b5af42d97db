// load_model_checkpoint (see model_checkpoint.h).
#include "checkpoint/model_checkpoint.h"

#include <filesystem>

#include "core/error.h"
#include "model/weights_io.h"
#include "checkpoint/checkpoint.h"

namespace fs = std::filesystem;

namespace moe {

LoadedCheckpoint load_model_checkpoint(const std::string& dir_arg, Backend& backend, int64_t rows) {
  MOE_USAGE_CHECK(fs::is_directory(dir_arg), "--checkpoint {}: no such directory", dir_arg);
  std::string dir = dir_arg;
  if (!fs::exists(fs::path(dir) / "model.safetensors") &&
      fs::is_directory(fs::path(dir) / "checkpoints")) {
    dir = resolve_resume_checkpoint(dir);  // a run directory: its newest checkpoint
  }
  for (const char* f : {"config.yaml", "model.safetensors", "tokenizer.model"}) {
    MOE_USAGE_CHECK(fs::exists(fs::path(dir) / f),
                    "checkpoint {} has no {} (expected a checkpoint directory written by "
                    "moetrain, holding config.yaml, model.safetensors and tokenizer.model)",
                    dir, f);
  }
  try {
    if (fs::exists(fs::path(dir) / "manifest.json")) verify_checkpoint(dir);
  } catch (const Error& e) {
    MOE_USAGE_FAIL("checkpoint {} is damaged: {}", dir, e.what());
  }
  LoadedCheckpoint out;
  out.dir = dir;
  out.config = load_checkpoint_config(dir);
  MOE_USAGE_CHECK(out.config.model.vocab_size > 0, "checkpoint {}: config.yaml has no "
                  "model.vocab_size", dir);
  if (fs::exists(fs::path(dir) / "trainer_state.json")) out.step = load_trainer_state(dir).step;
  out.tokenizer = std::make_unique<data::Tokenizer>(
      data::Tokenizer::load((fs::path(dir) / "tokenizer.model").string()));
  MOE_USAGE_CHECK(out.tokenizer->vocab_size() <= out.config.model.vocab_size,
                  "checkpoint {}: tokenizer.model has {} tokens, the model only {}", dir,
                  out.tokenizer->vocab_size(), out.config.model.vocab_size);
  LossConfig loss = out.config.loss;
  if (!loss.has("sp")) loss.losses.push_back("sp");
  const DType compute = out.config.train.dtype == "bf16" && backend.device() == Device::kCuda
                            ? DType::kBF16
                            : DType::kF32;
  out.model = std::make_unique<MoeModel>(out.config.model, loss, backend, rows,
                                         out.config.model.max_seq_len, compute);
  load_weights(*out.model, (fs::path(dir) / "model.safetensors").string());
  return out;
}

}  // namespace moe
