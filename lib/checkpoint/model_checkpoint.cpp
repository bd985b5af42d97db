// load_model_checkpoint (see model_checkpoint.h).
#include "checkpoint/model_checkpoint.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/weights_io.h"
#include "checkpoint/checkpoint.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

// NaN or infinite weights (a diverged run, bias_gamma too large) would give meaningless scores
// without any error: refuse them, naming the tensor.
void check_finite_weights(const SafeTensorsReader& reader) {
  for (const std::string& name : reader.names()) {
    const StDType dt = reader.info(name).dtype;
    if (dt != StDType::kF32 && dt != StDType::kF64 && dt != StDType::kF16 &&
        dt != StDType::kBF16) {
      continue;
    }
    if (dt == StDType::kF64) {
      const std::vector<double> v = reader.to_f64(name);
      for (size_t i = 0; i < v.size(); ++i) {
        MOE_USAGE_CHECK(std::isfinite(v[i]), "{}: tensor \"{}\" holds a non-finite value ({} at "
                        "element {}); the model cannot be evaluated (did the run diverge?)",
                        reader.path(), name, v[i], i);
      }
      continue;
    }
    const std::vector<float> v = reader.to_f32(name);  // exact for F32, F16 and BF16
    for (size_t i = 0; i < v.size(); ++i) {
      MOE_USAGE_CHECK(std::isfinite(v[i]), "{}: tensor \"{}\" holds a non-finite value ({} at "
                      "element {}); the model cannot be evaluated (did the run diverge?)",
                      reader.path(), name, v[i], i);
    }
  }
}

}  // namespace

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
  // A model sized by a tokenizer it trained (model.vocab_size == data.tokenizer_vocab_size, no
  // data.tokenizer file) must come with a tokenizer of exactly that size: a smaller one is a
  // swapped file, whose token ids would mean other words.
  MOE_USAGE_CHECK(!out.config.data.tokenizer.empty() ||
                      out.config.model.vocab_size != out.config.data.tokenizer_vocab_size ||
                      out.tokenizer->vocab_size() == out.config.model.vocab_size,
                  "checkpoint {}: tokenizer.model has {} tokens, but the model was trained with "
                  "a tokenizer of {} (data.tokenizer_vocab_size); it is not the run's tokenizer",
                  dir, out.tokenizer->vocab_size(), out.config.model.vocab_size);
  LossConfig loss = out.config.loss;
  if (!loss.has("sp")) loss.losses.push_back("sp");
  const DType compute = out.config.train.dtype == "bf16" && backend.device() == Device::kCuda
                            ? DType::kBF16
                            : DType::kF32;
  out.model = std::make_unique<MoeModel>(out.config.model, loss, backend, rows,
                                         out.config.model.max_seq_len, compute);
  // Weights that do not parse or fit are a damaged checkpoint: bad input, exit code 2.
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  try {
    SafeTensorsReader reader(weights);
    const auto& meta = reader.metadata();
    auto it = meta.find(kTokenizerHashKey);
    if (it != meta.end()) {
      const std::string found =
          fmt::format("{:016x}", hash_file((fs::path(dir) / "tokenizer.model").string()));
      MOE_USAGE_CHECK(found == it->second, "checkpoint {}: tokenizer.model is not the tokenizer "
                      "the model was trained with (its hash {} differs from {} recorded in "
                      "model.safetensors)", dir, found, it->second);
    }
    check_finite_weights(reader);
    load_weights(*out.model, reader, /*allow_unknown=*/false);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUsage) throw;
    MOE_USAGE_FAIL("checkpoint {} is damaged: {}", dir, e.what());
  }
  return out;
}

}  // namespace moe
